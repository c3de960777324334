//! `switchboard token`: a client access token for manual tests, made like the Azure SDK does.

use crate::Exit;
use crate::cli::TokenArgs;
use crate::config::{DEFAULT_DATA_DIR, parse_endpoint};
use crate::serve::read_or_create_key;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_auth::{ConnectionString, mint_client_token};

pub fn main(args: TokenArgs) -> Result<(), Exit> {
    if !switchboard_hub::is_valid_hub_name(&args.hub) {
        return Err(Exit::Usage(format!("--hub '{}' is not a valid hub name", args.hub)));
    }
    let (audience, key) = match &args.connection_string {
        Some(text) => {
            let cs: ConnectionString =
                text.parse().map_err(|e: switchboard_auth::AuthError| Exit::Usage(e.to_string()))?;
            let key =
                cs.access_key.clone().ok_or_else(|| Exit::Usage("the connection string has no AccessKey".into()))?;
            (cs.client_audience(&args.hub), key)
        }
        None => {
            let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let endpoint = parse_endpoint(args.endpoint.as_deref().unwrap_or("http://127.0.0.1:8080"))?;
            let audience =
                format!("{}/client/?hub={}", endpoint.as_str().trim_end_matches('/'), args.hub.to_ascii_lowercase());
            (audience, read_or_create_key(&data_dir)?)
        }
    };
    let token = mint_client_token(&audience, args.user.as_deref(), Duration::from_secs(args.lifetime), &key);
    println!("{token}");
    Ok(())
}
