"""The modelgate command: every registry verb, the demo, and clear errors with a non-zero exit."""

from __future__ import annotations

import hashlib
import json

import pytest

from service.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_push_list_show_promote_rollback_history(capsys, registry, cancer_model, monkeypatch):
    monkeypatch.setenv("MODELGATE_REGISTRY", str(registry.root))  # no --registry: the env var is used
    monkeypatch.setenv("MODELGATE_ACTOR", "ci-bot")
    code, out, _ = run(
        capsys,
        "registry",
        "push",
        str(cancer_model.onnx),
        "--name",
        "cancer",
        "--reference",
        str(cancer_model.reference),
        "--metrics",
        '{"auc": 0.98}',
    )
    assert code == 0 and "pushed cancer:1 (classification, 30 features" in out
    run(
        capsys,
        "registry",
        "push",
        str(cancer_model.onnx),
        "--name",
        "cancer",
        "--reference",
        str(cancer_model.reference),
    )

    assert run(capsys, "registry", "promote", "cancer", "1", "--to", "champion", "--reason", "launch")[
        1
    ].strip() == ("cancer: champion - -> 1")
    run(capsys, "registry", "promote", "cancer", "latest", "--to", "champion")
    code, out, _ = run(capsys, "registry", "list")
    assert code == 0 and out.splitlines()[1].split() == ["cancer", "2", "2", "-"]
    assert (
        "champion rolled back 2 -> 1" in run(capsys, "registry", "rollback", "cancer", "--reason", "oops")[1]
    )

    shown = json.loads(run(capsys, "registry", "show", "cancer:champion")[1])
    assert shown["version"] == 1 and shown["lineage"]["metrics"] == {"auc": 0.98}
    assert "mean_radius" in shown["reference"]["features"]
    full = json.loads(run(capsys, "registry", "show", "cancer:1", "--full")[1])
    assert full["reference"]["features"]["mean_radius"]["kind"] == "numeric"

    history = json.loads(run(capsys, "registry", "history", "cancer", "--json")[1])
    assert [(h["action"], h["from"], h["to"], h["actor"]) for h in history][-3:] == [
        ("promote", None, 1, "ci-bot"),
        ("promote", 1, 2, "ci-bot"),
        ("rollback", 2, 1, "ci-bot"),
    ]
    text = run(capsys, "registry", "history", "cancer")[1]
    assert "rollback" in text and "oops" in text


def test_verify_exits_non_zero_on_a_mismatch(capsys, cancer_registry):
    root = str(cancer_registry.root)
    code, out, _ = run(capsys, "registry", "verify", "--registry", root)
    assert code == 0 and "ok: 2 version(s) of 1 model(s)" in out
    target = cancer_registry.root / "models/cancer/versions/2/model.onnx"
    target.chmod(0o644)
    target.write_bytes(b"tampered")
    code, out, err = run(capsys, "registry", "verify", "--registry", root)
    assert code == 1 and "MISMATCH cancer:2 model.onnx" in out and "1 problem(s)" in err


def test_the_audit_exports_as_a_hash_chain_and_a_tampered_line_fails_verify(
    capsys, cancer_registry, tmp_path
):
    root = str(cancer_registry.root)
    cancer_registry.promote("cancer", 2, "champion", reason="canary passed", actor="ci-bot")
    cancer_registry.rollback("cancer", reason="bad canary", actor="ci-bot")
    export = tmp_path / "audit.jsonl"
    assert run(capsys, "registry", "audit", "cancer", "--out", str(export), "--registry", root)[0] == 0
    lines = export.read_bytes().splitlines()
    assert len(lines) == 6  # two pushes, three promotions, the rollback
    first, *rest = (json.loads(line) for line in lines)
    assert first["prev"] == hashlib.sha256(b"").hexdigest()
    assert [entry["prev"] for entry in rest] == [hashlib.sha256(line).hexdigest() for line in lines[:-1]]
    code, out, _ = run(capsys, "registry", "verify", "--audit", str(export))
    assert code == 0 and "ok: 6 audit entries chain unbroken" in out
    code, out, _ = run(capsys, "registry", "verify", "--registry", root)
    assert code == 0 and "6 audit entries chain unbroken" in out

    # rewrite who rolled back, in the export and in the registry's own history
    forged = export.read_bytes().replace(b'"actor":"tests"', b'"actor":"someone"', 1)
    export.write_bytes(forged)
    code, out, err = run(capsys, "registry", "verify", "--audit", str(export))
    assert code == 1 and "BROKEN" in out and "line 2: prev" in out and "1 problem(s)" in err
    history = cancer_registry.root / "models/cancer/history.jsonl"
    history.write_bytes(history.read_bytes().replace(b'"reason":"canary passed"', b'"reason":"planned"'))
    code, out, _ = run(capsys, "registry", "verify", "--registry", root)
    assert code == 1 and "BROKEN cancer history.jsonl line 6: prev" in out

    # deleting an entry breaks the link after it too
    kept = [line for n, line in enumerate(lines, 1) if n != 3]
    export.write_bytes(b"".join(line + b"\n" for line in kept))
    code, out, _ = run(capsys, "registry", "verify", "--audit", str(export))
    assert code == 1 and "line 3: entry seq 4, expected 3" in out and "line 3: prev" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("registry", "show", "dog"), "model 'dog' not found"),
        (("registry", "show", "cancer:9"), "no version 9"),
        (("registry", "promote", "cancer", "7", "--to", "champion"), "no version 7"),
        (("registry", "rollback", "cancer"), "no previous champion"),
        (("registry", "push", "missing.onnx", "--name", "cancer", "--reference", "x.csv"), "does not exist"),
        (("registry", "push", "m.onnx", "--name", "../up", "--reference", "x.csv"), "invalid model name"),
        (
            ("registry", "push", "m.onnx", "--name", "ok", "--reference", "x.csv", "--metrics", "{"),
            "--metrics is not valid JSON",
        ),
    ],
)
def test_errors_are_one_clear_line_and_exit_1(capsys, cancer_registry, args, message):
    code, _, err = run(capsys, *args, "--registry", str(cancer_registry.root))
    assert code == 1 and err.startswith("error: ") and message in err


def test_serve_refuses_an_empty_registry(capsys, tmp_path):
    code, _, err = run(capsys, "serve", "--registry", str(tmp_path / "empty"))
    assert code == 1 and "holds no models" in err and "modelgate demo" in err


def test_demo_builds_once_and_is_idempotent(capsys, tmp_path):
    root = str(tmp_path / "demo")
    code, out, _ = run(capsys, "demo", "--registry", root)
    assert code == 0 and "champion v1" in out and "challenger v2" in out
    code, out, _ = run(capsys, "demo", "--registry", root)
    assert code == 0 and "already" in out
    assert json.loads(run(capsys, "registry", "list", "--json", "--registry", root)[1]) == [
        {"name": "breast-cancer", "versions": [1, 2], "champion": 1, "challenger": 2}
    ]
    assert run(capsys, "registry", "verify", "--registry", root)[0] == 0


def test_serve_refuses_an_execution_provider_this_build_lacks(capsys, cancer_registry, monkeypatch):
    monkeypatch.setenv("MODELGATE_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    code, _, err = run(capsys, "serve", "--registry", str(cancer_registry.root))
    assert code == 1 and err.startswith("error: execution providers CUDAExecutionProvider not available")
    assert "available: " in err and "CPUExecutionProvider" in err.split("available: ")[1]


def test_serve_refuses_a_log_url_it_cannot_use(capsys, cancer_registry, monkeypatch):
    monkeypatch.setenv("MODELGATE_LOG_URL", "sqlite:///predictions.db")
    code, _, err = run(capsys, "serve", "--registry", str(cancer_registry.root))
    assert code == 1 and "setting log_url: 'sqlite:///predictions.db' is not a postgresql:// URL" in err
    monkeypatch.setenv("MODELGATE_LOG_URL", "postgresql://modelgate:secret@127.0.0.1:1/modelgate")
    code, _, err = run(capsys, "serve", "--registry", str(cancer_registry.root))
    assert code == 1 and err.startswith("error: cannot connect to PostgreSQL at postgresql://modelgate:***@")
    assert "secret" not in err


def test_push_with_a_time_column_profiles_each_hour_of_the_day(capsys, registry, centred_model, tmp_path):
    model, _ = centred_model(False)
    reference = tmp_path / "seen.csv"
    rows = [f"{(i % 24) * 3600 + 86_400 * (i // 24)},{0.01 * (i % 24)}\n" for i in range(24 * 200)]
    reference.write_text("seen_at,x\n" + "".join(rows))
    assert main(["registry", "push", str(model), "--name", "cyclic", "--reference", str(reference),
                 "--time-column", "seen_at", "--registry", str(registry.root)]) == 0  # fmt: skip
    manifest = registry.manifest("cyclic", 1)
    assert manifest.inputs.names == ("x",) and len(manifest.reference.by_hour) == 24


def test_a_model_missing_from_the_default_registry_points_at_the_demo(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MODELGATE_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "registry", "history", "breast-cancer")
    assert code == 1 and "not found in .modelgate/registry" in err and "hint" not in err
    (tmp_path / ".modelgate" / "demo").mkdir(parents=True)  # after make serve
    code, _, err = run(capsys, "registry", "history", "breast-cancer")
    assert (
        code == 1
        and "hint: make serve's demo registry is .modelgate/demo: add --registry .modelgate/demo" in err
    )
