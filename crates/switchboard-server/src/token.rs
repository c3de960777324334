//! `switchboard token`: access tokens for manual tests, made like the Azure SDK makes them: a
//! client token (`--hub`, audience `{endpoint}/client/?hub=`) or a REST token (`--rest URL`,
//! audience = the URL without its query).

use crate::Exit;
use crate::cli::TokenArgs;
use crate::config::{DEFAULT_DATA_DIR, parse_endpoint};
use crate::serve::node_key;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_auth::{AuthError, ConnectionString, mint_client_token, mint_server_token};

pub fn main(args: TokenArgs) -> Result<(), Exit> {
    let (endpoint, key) = match &args.connection_string {
        Some(text) => {
            let cs: ConnectionString = text.parse().map_err(|e: AuthError| Exit::Usage(e.to_string()))?;
            let key =
                cs.access_key.clone().ok_or_else(|| Exit::Usage("the connection string has no AccessKey".into()))?;
            (cs.endpoint.as_str().trim_end_matches('/').to_owned(), key)
        }
        None => {
            let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let endpoint = parse_endpoint(args.endpoint.as_deref().unwrap_or("http://127.0.0.1:8080"))?;
            (endpoint.as_str().trim_end_matches('/').to_owned(), node_key(&data_dir)?)
        }
    };
    let lifetime = Duration::from_secs(args.lifetime);
    let token = match (&args.hub, &args.rest) {
        (Some(hub), _) => {
            if !switchboard_hub::is_valid_hub_name(hub) {
                return Err(Exit::Usage(format!("--hub '{hub}' is not a valid hub name")));
            }
            let audience = format!("{endpoint}/client/?hub={}", hub.to_ascii_lowercase());
            mint_client_token(&audience, args.user.as_deref(), lifetime, &key)
        }
        (None, Some(url)) => mint_server_token(url.split('?').next().unwrap_or_default(), lifetime, &key),
        (None, None) => return Err(Exit::Usage("give --hub for a client token or --rest URL for a REST token".into())),
    };
    println!("{token}");
    Ok(())
}
