//! A bounded fuzzing campaign on the stable toolchain, part of the test command.
//!
//! Every parser that takes untrusted input gets, in turn: each file of its corpus
//! (`corpus/<target>/`: inputs that once found a bug, and a few valid seeds), then mutations of
//! them (bit flips, cuts, repeats, splices of tokens that matter to the format) for its share of
//! the time budget. A target must never panic, and must keep its property (below). An input
//! that breaks one is written to `corpus/<target>/found-<hash>` before the test fails, so it
//! joins the corpus once the bug is fixed.
//!
//! `SWITCHBOARD_FUZZ_SECONDS` (default 40) bounds the whole campaign; `SWITCHBOARD_FUZZ_SEED`
//! replays a run (the seed is printed). The nightly `cargo fuzz` targets in
//! `crates/switchboard-protocol/fuzz` remain for long runs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchboard_auth::{AccessKeys, Audience, Verifier, mint_client_token, mint_server_token};
use switchboard_protocol::websocket::WsReader;
use switchboard_protocol::{Protocol, handshake, json, msgpack};

/// One fuzz target: checks one input, `Err` when a property does not hold.
type Check = fn(&[u8]) -> Result<(), String>;

/// Bytes that matter to the formats, spliced into inputs.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"\\",
    b"\n",
    b"\r\n",
    b"\x1e",
    b":",
    b",",
    b"1e400",
    b"-0",
    b"null",
    b"\"arguments\":",
    b"\"target\":\"t\"",
    b"%FF",
    b"%2F",
    b"/",
    b"groups",
    b"users",
    b"connections",
    b":send",
    b"\\ud800",
    b" eq ",
    b" and ",
    b" or ",
    b"not ",
    b" in groups",
    b"userId",
    b"startswith(",
    b"substring(",
    b"length(",
    b"''",
    b"\\udc00",
    b"\\u00e9",
    b"\x80",
    b"\x81",
    b"\xff",
    b"\x00",
    b"\x91",
    b"\xdc\xff\xff",
    b"\xc1",
    b".",
    b"eyJ",
    b"=",
];

fn targets() -> Vec<(&'static str, Check)> {
    vec![
        ("handshake", check_handshake),
        ("json", check_json),
        ("msgpack", check_msgpack),
        ("websocket", check_websocket),
        ("payload", check_payload),
        ("route", check_route),
        ("token", check_token),
        ("filter", check_filter),
        ("backplane", check_backplane),
    ]
}

fn check_handshake(input: &[u8]) -> Result<(), String> {
    let _ = handshake::parse_request(input);
    Ok(())
}

fn check_json(input: &[u8]) -> Result<(), String> {
    let _ = json::decode(input);
    let _ = json::parse(input);
    let _ = Protocol::Json.inspect(input);
    let _ = Protocol::Json.next_record(input, 1 << 16);
    Ok(())
}

fn check_msgpack(input: &[u8]) -> Result<(), String> {
    let _ = msgpack::decode(input);
    let _ = msgpack::parse(input);
    let _ = Protocol::MessagePack.inspect(input);
    let _ = Protocol::MessagePack.next_record(input, 1 << 16);
    Ok(())
}

/// The ASP.NET backplane's envelopes: decoding never panics, and what decodes encodes back to
/// bytes that decode to the same envelope.
fn check_backplane(input: &[u8]) -> Result<(), String> {
    use switchboard_backplane::{Ack, Completion, GroupCommand, Invocation};
    fn round_trip<T: PartialEq + std::fmt::Debug>(
        decoded: Option<T>,
        encode: impl Fn(&T) -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<(), String> {
        let Some(first) = decoded else { return Ok(()) };
        let again = decode(&encode(&first));
        if again.as_ref() != Some(&first) {
            return Err(format!("{first:?} encoded and decoded is {again:?}"));
        }
        Ok(())
    }
    round_trip(Invocation::decode(input).ok(), Invocation::encode, |b| Invocation::decode(b).ok())?;
    round_trip(GroupCommand::decode(input).ok(), GroupCommand::encode, |b| GroupCommand::decode(b).ok())?;
    round_trip(Ack::decode(input).ok(), Ack::encode, |b| Ack::decode(b).ok())?;
    round_trip(Completion::decode(input).ok(), Completion::encode, |b| Completion::decode(b).ok())
}

fn check_websocket(input: &[u8]) -> Result<(), String> {
    let mut bytes = input.to_vec();
    let _ = WsReader::new(1024).feed(&mut bytes, &mut |_| Ok(()));
    Ok(())
}

/// `:execute`'s OData filter and commands: parsing never panics, nor does evaluating an
/// accepted filter on connections of every shape.
fn check_filter(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    if let Ok(filter) = switchboard_hub::Filter::parse(&text) {
        for (user, groups) in [(None, &[][..]), (Some("listener-1"), &["g1", "g'2"][..]), (Some(""), &[""][..])] {
            let subject = switchboard_hub::Subject { connection_id: "c.1", user_id: user, groups };
            let _ = filter.matches(&subject);
        }
    }
    let _ = switchboard_api::parse_commands(input);
    Ok(())
}

/// A payload that is accepted reaches clients of both protocols (nothing is silently dropped).
fn check_payload(input: &[u8]) -> Result<(), String> {
    for content_type in [None, Some("application/octet-stream")] {
        if let Ok(frames) = switchboard_api::parse_payload(content_type, input) {
            for protocol in [Protocol::Json, Protocol::MessagePack] {
                if frames.get(protocol).is_none() {
                    return Err(format!("accepted ({content_type:?}) but cannot reach {} clients", protocol.name()));
                }
            }
        }
    }
    Ok(())
}

/// An accepted route names users and groups of 1 to 1,024 characters (Azure's bounds).
fn check_route(input: &[u8]) -> Result<(), String> {
    use switchboard_api::Operation as Op;
    use switchboard_hub::Target;
    let (method, path) = input.split_first().map_or((0, &input[..0]), |(m, rest)| (*m, rest));
    let method = [http::Method::GET, http::Method::HEAD, http::Method::POST, http::Method::PUT, http::Method::DELETE]
        [usize::from(method) % 5]
        .clone();
    let path = String::from_utf8_lossy(path);
    let Ok(route) = switchboard_api::parse_route(&method, &path, None) else { return Ok(()) };
    let (user, group) = match &route.operation {
        Op::SendUser(u) | Op::CloseUser(u) | Op::UserExists(u) | Op::RemoveUserFromAllGroups(u) => (Some(u), None),
        Op::AddUserToGroup { user, group }
        | Op::RemoveUserFromGroup { user, group }
        | Op::UserInGroup { user, group } => (Some(user), Some(group)),
        Op::SendGroup(g) | Op::CloseGroup(g) | Op::GroupExists(g) => (None, Some(g)),
        Op::AddConnectionToGroup { group, .. } | Op::RemoveConnectionFromGroup { group, .. } => (None, Some(group)),
        Op::List(Target::User(u)) | Op::Count(Target::User(u)) => (Some(u), None),
        Op::List(Target::Group(g)) | Op::Count(Target::Group(g)) => (None, Some(g)),
        _ => (None, None),
    };
    for name in user.into_iter().chain(group) {
        let length = name.chars().count();
        if !(1..=1024).contains(&length) {
            return Err(format!("accepted a name of {length} characters in {:?}", route.operation)
                .chars()
                .take(200)
                .collect());
        }
    }
    Ok(())
}

/// Nothing but a token signed with the key verifies: a token that verifies carries the signed
/// part of one of the minted seeds (its signature may differ in bits base64 ignores).
fn check_token(input: &[u8]) -> Result<(), String> {
    let token = String::from_utf8_lossy(input);
    let verifier = verifier();
    let verified =
        verifier.verify_client(&token, "chat").is_ok() || verifier.verify_server(&token, "/api/v1/hubs/chat").is_ok();
    let signed_part = token.rsplit_once('.').map_or("", |(signed, _)| signed);
    if verified && !SEEDS.iter().any(|seed| seed.rsplit_once('.').is_some_and(|(s, _)| s == signed_part)) {
        return Err("a token the key did not sign verified".into());
    }
    Ok(())
}

const KEY: &str = "fuzz-campaign-access-key-0123456789";
const ENDPOINT: &str = "http://127.0.0.1:8080";

/// Tokens minted at run time (they depend on the clock and the key): valid client and server
/// tokens, and one for another resource whose path ends in "client" (W1), which must not verify.
static SEEDS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    let hour = Duration::from_secs(3600);
    vec![
        mint_client_token(&format!("{ENDPOINT}/client/?hub=chat"), Some("u"), hour, KEY),
        mint_client_token(&format!("{ENDPOINT}/client/?hub=chat"), None, hour, KEY),
        mint_server_token(&format!("{ENDPOINT}/api/v1/hubs/chat"), hour, KEY),
    ]
});

fn verifier() -> Verifier {
    let endpoint = url::Url::parse(ENDPOINT).expect("a URL");
    Verifier::new(AccessKeys::new([KEY.to_owned()]).expect("a key"), Audience::new([&endpoint]), 30)
}

/// Seeds made at run time.
fn runtime_seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "token" => {
            let xclient = format!("{ENDPOINT}/api/v1/hubs/xclient?hub=chat");
            let mut seeds: Vec<Vec<u8>> = SEEDS.iter().map(|t| t.clone().into_bytes()).collect();
            seeds.push(mint_client_token(&xclient, None, Duration::from_secs(3600), KEY).into_bytes());
            seeds
        }
        _ => Vec::new(),
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).ok()?)))
        .collect();
    files.sort();
    files
}

/// Applies one to four random mutations.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=4) {
        let len = input.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                input[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                input[at] = rng.random();
            }
            2 if len > 0 => {
                let (from, to) = (rng.random_range(0..len), rng.random_range(0..=len));
                let (from, to) = (from.min(to), from.max(to));
                input.drain(from..to);
            }
            3 if len > 0 => {
                // Repeat a slice: deep nesting and long names come from here.
                let from = rng.random_range(0..len);
                let to = (from + rng.random_range(1..=16)).min(len);
                let piece = input[from..to].to_vec();
                let times = rng.random_range(1..=200);
                let at = rng.random_range(0..=input.len());
                input.splice(at..at, piece.iter().copied().cycle().take(piece.len() * times));
            }
            4 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                let at = rng.random_range(0..=len);
                input.splice(at..at, token.iter().copied());
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let at = rng.random_range(0..=len);
                let take = rng.random_range(0..=other.len());
                input.splice(at..at, other[..take].iter().copied());
            }
            _ => {
                let extra: Vec<u8> = (0..rng.random_range(1..=16)).map(|_| rng.random()).collect();
                input.extend(extra);
            }
        }
    }
    input.truncate(1 << 16);
}

/// Runs `check` on `input`; a panic or a broken property is saved to the corpus and reported.
fn run_one(target: &str, check: Check, input: &[u8]) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
    let problem = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(broken)) => broken,
        Err(panic) => {
            let text =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("panicked: {}", text.unwrap_or_default())
        }
    };
    let hash = input.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
    let path = corpus_dir(target).join(format!("found-{hash:016x}"));
    let _ = std::fs::create_dir_all(corpus_dir(target));
    let _ = std::fs::write(&path, input);
    Err(format!("{target}: {problem} (input saved to {})", path.display()))
}

#[test]
fn every_untrusted_input_parser_survives_the_campaign() {
    let budget: u64 = std::env::var("SWITCHBOARD_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let seed: u64 = std::env::var("SWITCHBOARD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("fuzz campaign: seed {seed} (SWITCHBOARD_FUZZ_SEED replays it), {budget} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let targets = targets();
    let share = Duration::from_secs(budget) / targets.len() as u32;
    // Panics are expected and caught; keep their messages out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for (target, check) in targets {
        let mut seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, bytes)| bytes).collect();
        seeds.extend(runtime_seeds(target));
        for input in &seeds {
            if let Err(failure) = run_one(target, check, input) {
                failures.push(failure);
            }
        }
        let (started, mut runs) = (Instant::now(), 0u64);
        let mut input = Vec::new();
        while started.elapsed() < share && failures.len() < 10 {
            if input.is_empty() || rng.random_ratio(1, 8) {
                input = if seeds.is_empty() { Vec::new() } else { seeds[rng.random_range(0..seeds.len())].clone() };
            }
            mutate(&mut rng, &seeds, &mut input);
            if let Err(failure) = run_one(target, check, &input) {
                failures.push(failure);
            }
            runs += 1;
        }
        println!("  {target}: {} corpus inputs, {runs} mutated inputs", seeds.len());
    }
    std::panic::set_hook(default_hook);
    assert!(failures.is_empty(), "the campaign (seed {seed}) found:\n{}", failures.join("\n"));
}
