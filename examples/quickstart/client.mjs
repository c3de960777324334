// A SignalR JS client that finds the service through the app's negotiate endpoint.
import * as signalR from "@microsoft/signalr";

const connection = new signalR.HubConnectionBuilder()
  .withUrl(process.env.APP_URL ?? "http://127.0.0.1:7071/api", { headers: { "x-ms-client-principal-id": "alice" } })
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();
connection.on("newMessage", (...args) => console.log("newMessage", ...args));
await connection.start();
console.log(`connected as user alice, connection id ${connection.connectionId}; waiting for messages`);
