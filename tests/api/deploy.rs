//! The container files, without a Docker engine: `docker-compose.yml` against the compose-spec JSON schema and the
//! repository's rules for it (pinned images, a healthcheck on every service, `depends_on` healthy, named volumes
//! for DynamoDB Local, Meilisearch and orderflow's data folder; `tests/deploy/compose.mjs`), and the Dockerfile's
//! shape. The schema check needs Node and npm `dclint` (which ships the official compose-spec schema):
//! `scripts/test.sh` installs them (scripts/services.sh) and sets `COMPOSE_SCHEMA_PREFIX`; without it that test
//! says "skipped".

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_compose_file_passes_the_compose_spec_schema_and_the_rules() {
    let Ok(prefix) = std::env::var("COMPOSE_SCHEMA_PREFIX") else {
        println!(
            "skipped: COMPOSE_SCHEMA_PREFIX is not set (scripts/test.sh sets it; scripts/services.sh installs it)"
        );
        return;
    };
    let output = std::process::Command::new("node")
        .arg(format!("{ROOT}/tests/deploy/compose.mjs"))
        .env("COMPOSE_SCHEMA_PREFIX", prefix)
        .env("COMPOSE_FILE", format!("{ROOT}/docker-compose.yml"))
        .output()
        .expect("node runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "docker-compose.yml fails its checks:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn the_image_caches_dependencies_runs_unprivileged_and_has_a_healthcheck() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile");
    let instructions: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    // Dependencies are built from the manifests before the sources are copied in.
    let first_build = instructions.iter().position(|l| l.contains("cargo build")).expect("a cargo build");
    let last_copy =
        instructions.iter().rposition(|l| l.trim() == "COPY . .").expect("the sources are copied into the build");
    assert!(first_build < last_copy, "no dependency layer before the sources:\n{dockerfile}");
    assert!(instructions[last_copy..].iter().any(|l| l.contains("cargo build")), "the sources are built after");
    // The runtime stage: a non-root user and a HEALTHCHECK.
    let runtime = &instructions[instructions.iter().rposition(|l| l.starts_with("FROM ")).expect("FROM")..];
    let user = runtime.iter().find_map(|l| l.strip_prefix("USER ")).expect("a USER in the runtime stage").trim();
    assert!(!["root", "0", "0:0"].contains(&user), "runs as {user}");
    assert!(runtime.iter().any(|l| l.starts_with("HEALTHCHECK ")), "no HEALTHCHECK in the runtime stage");
    // The build context leaves out version control and build output.
    let ignore = std::fs::read_to_string(format!("{ROOT}/.dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    for entry in [".git", "target"] {
        assert!(ignored.contains(&entry), ".dockerignore does not cover {entry}");
    }
    assert!(!ignored.contains(&"docs"), "docs/asyncapi.json is compiled in");
}
