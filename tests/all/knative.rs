//! `knative/` and `fn deploy --knative`: every manifest validates against the Knative CRD
//! schemas (tests/data/knative-crds, checked by tests/clients/validate_knative.py with the
//! `jsonschema` package), and a broken one does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{fn_cli, python_venv, repo};

fn validate(files: &[PathBuf]) -> (bool, String) {
    let python = python_venv("knative-venv", &["jsonschema==4.25.1", "PyYAML==6.0.3"]);
    let out = Command::new(python)
        .arg(repo().join("tests/clients/validate_knative.py"))
        .arg(repo().join("tests/data/knative-crds"))
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(function: &Path, extra: &[&str], out: &Path) -> PathBuf {
    let result = fn_cli()
        .args(["deploy", "--knative", "-o", "yaml", "--path"])
        .arg(function)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "fn deploy --knative: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let name = function.file_name().unwrap().to_string_lossy();
    let path = out.join(format!("{name}{}.yaml", extra.join("")));
    std::fs::write(&path, &result.stdout).unwrap();
    path
}

#[test]
fn every_knative_manifest_validates_against_the_crd_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("knative"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for entry in std::fs::read_dir(repo().join("functions")).unwrap() {
        let function = entry.unwrap().path();
        if function.join("fn.toml").is_file() {
            files.push(render(&function, &[], dir.path()));
        }
    }
    let triage = repo().join("functions/ci-triage");
    files.push(render(&triage, &["--autoscaler", "hpa"], dir.path()));
    let keda = render(&triage, &["--autoscaler", "keda"], dir.path());
    let text = std::fs::read_to_string(&keda).unwrap();
    assert!(
        text.contains(r#"autoscaling.knative.dev/prometheus-query: "sum(slmfn_model_queue_depth{k_service=\"ci-triage\"})""#),
        "{text}"
    );
    let keda_path = keda.clone();
    files.push(keda);
    let rendered = std::fs::read_to_string(dir.path().join("ci-triage.yaml")).unwrap();
    assert!(rendered.contains("kind: \"Trigger\""), "{rendered}");
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");
    assert!(text.contains(" 0 invalid"), "{text}");

    // The validator catches a typo: it is not a test that cannot fail.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, rendered.replace("subscriber:", "subscribr:")).unwrap();
    let (ok, text) = validate(&[broken]);
    assert!(!ok, "a misspelt Trigger field must fail:\n{text}");
    let bad_keda = dir.path().join("bad-keda.yaml");
    std::fs::write(
        &bad_keda,
        std::fs::read_to_string(&keda_path)
            .unwrap()
            .replace("\"http://prometheus-operated", "\"prometheus-operated"),
    )
    .unwrap();
    let (ok, text) = validate(&[bad_keda]);
    assert!(
        !ok,
        "a Prometheus address that is no URL must fail:\n{text}"
    );
}
