//! Writes the seed corpus in `seeds/`: valid cookies of the fuzzing key rings (so the fuzzer
//! mutates real signatures and ciphertexts instead of guessing their shape), headers holding
//! them, and express-session records. Run it again after changing a fuzzing secret:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`.

use std::fs;
use std::path::Path;

use sesame_core::SessionId;
use sesame_fuzz::{COOKIE_NAME, PRIVATE, SIGNED};

fn main() -> std::io::Result<()> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let ids = [
        // express-session's shape, a UUID, and ids with the characters encoding must survive.
        "2TVZ0jQ7uX3wqkXF8H3yKxhE5pBcYJmN",
        "550e8400-e29b-41d4-a716-446655440000",
        "a%41.b=c:d",
        "x",
    ]
    .map(|id| SessionId::parse(id).expect("a valid seed id"));

    let mut values = Vec::new();
    for id in &ids {
        values.push(SIGNED.sign_cookie_value(id));
        values.push(SIGNED.sign(id));
        values.push(PRIVATE.sign_cookie_value(id));
    }
    write(&seeds.join("cookie_value"), &values)?;

    let headers: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, value)| match i % 3 {
            0 => format!("{COOKIE_NAME}={value}"),
            1 => format!("theme=dark; {COOKIE_NAME}=\"{value}\"; {COOKIE_NAME}=later"),
            _ => format!("a=1;b=2=3; {COOKIE_NAME} = {value} ;c"),
        })
        .collect();
    write(&seeds.join("cookie_header"), &headers)?;

    let records = [
        r#"{"cookie":{"originalMaxAge":86400000,"expires":"2026-11-24T00:06:37.123Z","secure":false,"httpOnly":true,"path":"/","sameSite":"lax"},"user":{"name":"ada","roles":["admin"]},"views":3}"#,
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}}"#,
        r#"{"cookie":{"originalMaxAge":1500.4,"expires":null,"sameSite":true,"signed":true,"priority":"high","partitioned":true,"domain":"example.com"},"f":-1.5e-7,"n":null,"s":"\u00e9\ud83d\ude00"}"#,
        r#"{"flash":[],"cookie":{"expires":"2030-01-01T00:00:00+02:00","sameSite":"none","secure":true}}"#,
    ];
    write(&seeds.join("record_json"), &records)
}

fn write(dir: &Path, seeds: &[impl AsRef<[u8]>]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:02}")), seed)?;
    }
    Ok(())
}
