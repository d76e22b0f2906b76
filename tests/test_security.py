"""Security: no code-executing deserialization in our code, DeepSpeed checkpoints read with
``weights_only=True``, servers on loopback by default, and no secret from the environment in
logs or the MLflow store (params, tags, metrics, artifacts, the database itself)."""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUR_CODE = ("phases", "tasks", "flows")


# --------------------------------------------------------------------------- source scan


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _safe_loader_classes(tree: ast.Module) -> set[str]:
    return {c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and any("SafeLoader" in _dotted(b) for b in c.bases)}


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Calls that can run code from the data they read, or load code from a hub."""
    tree = ast.parse(source, filename)
    safe_loaders = _safe_loader_classes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"import {n}" for n in names if n.split(".")[0] in ("cloudpickle", "dill", "joblib", "shelve", "marshal")]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}"
        if name == "torch.load" and not _is_true(kw.get("weights_only")):
            found.append(f"{where} torch.load without weights_only=True")
        if name.split(".")[0] in ("pickle", "cPickle", "_pickle") and name.split(".")[-1] in ("load", "loads", "Unpickler"):
            found.append(f"{where} {name}")
        if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all") or (
            name == "yaml.load" and not any(s in _dotted(kw.get("Loader", ast.Constant(None))) for s in ("SafeLoader", *safe_loaders))
        ):
            found.append(f"{where} {name} without a SafeLoader")
        for key, value in kw.items():
            if key == "weights_only" and isinstance(value, ast.Constant) and value.value is False:
                found.append(f"{where} weights_only=False")
            if key in ("trust_remote_code", "allow_pickle") and _is_true(value):
                found.append(f"{where} {key}=True")
    return found


def test_the_scan_finds_what_it_forbids():
    bad = textwrap.dedent(
        """
        import pickle, torch, yaml, cloudpickle
        torch.load("x.pt")
        torch.load("x.pt", weights_only=False)
        pickle.loads(b"")
        yaml.load(text, Loader=yaml.Loader)
        AutoModel.from_pretrained("m", trust_remote_code=True)
        np.load("a.npy", allow_pickle=True)
        """
    )
    assert len(unsafe_calls(bad)) == 8
    good = textwrap.dedent(
        """
        class L(yaml.SafeLoader): pass
        torch.load("x.pt", weights_only=True)
        yaml.load(text, Loader=L)
        yaml.safe_load(text)
        """
    )
    assert unsafe_calls(good) == []


def test_our_code_deserializes_nothing_that_can_run_code():
    found = []
    for top in OUR_CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            found += unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


# --------------------------------------------------------------------------- DeepSpeed checkpoints

# One CPU rank in a subprocess (DeepSpeed's process group is process-wide): a ZeRO-2 engine (its
# optimizer states pickle a loss scaler and fragment addresses) saves, then restore() reads it
# back while every torch.load call is recorded; then a file whose unpickling would run code.
_DEEPSPEED_SCRIPT = r"""
import json, os, sys
from dataclasses import asdict
from pathlib import Path
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], OMP_NUM_THREADS="1")
import torch
from phases.config import PretrainConfig
from phases.errors import DataError
from phases.pretrain import checkpoint, runtime
from phases.pretrain.entry import _skip_shm_comm_build

work = Path(sys.argv[1])
_skip_shm_comm_build()
runtime.init_distributed()
arch = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=64, model_type="llama", architectures=["LlamaForCausalLM"])
cfg = PretrainConfig(max_steps=5, warmup_steps=1, micro_batch_size=2, zero_stage=2)
torch.manual_seed(0)
engine = runtime.build_engine(cfg, arch, 1)
x = torch.randint(0, 300, (2, 16))
engine.backward(engine(input_ids=x, labels=x).loss)
engine.step()
saved = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
tag = "g0-step0000001"
(work / tag).mkdir(parents=True)
(work / tag / "rng_rank0.json").write_text(json.dumps(checkpoint.get_rng_state()))
engine.save_checkpoint(str(work), tag, client_state={checkpoint.CLIENT_KEY: asdict(checkpoint.RunState(step=1))}, save_latest=False)
files = sorted(p.name for p in (work / tag).glob("*.pt"))

torch.manual_seed(1)
fresh = runtime.build_engine(cfg, arch, 1)
calls, real_load = [], torch.load
def recording_load(*args, **kwargs):
    calls.append(kwargs.get("weights_only"))
    return real_load(*args, **kwargs)
torch.load = recording_load
plan = {"dir": str(work), "mode": "resume", "tag": tag, "generation": 0, "data_fingerprint": "", "tokenizer_digest": ""}
state = checkpoint.restore(fresh, plan, 0)
same = all(torch.equal(saved[k], v) for k, v in fresh.module.state_dict().items())

class Payload:
    def __reduce__(self):
        return (os.mkdir, (str(work / "PWNED"),))
torch.save({"module": Payload()}, work / tag / "mp_rank_00_model_states.pt")
try:
    checkpoint.restore(fresh, plan, 0)
    refused = ""
except DataError as e:
    refused = str(e)
print("RESULT " + json.dumps({"files": files, "calls": calls, "step": state.step, "same": same, "refused": refused,
                              "executed": (work / "PWNED").exists()}))
"""


def test_deepspeed_checkpoints_are_read_weights_only(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(
        [sys.executable, "-c", _DEEPSPEED_SCRIPT, str(tmp_path / "ckpt"), str(29500 + os.getpid() % 400)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, r.stdout[-2000:] + r.stderr[-4000:]
    res = json.loads(line.removeprefix("RESULT "))
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in res["files"]  # the file with DeepSpeed's own classes
    assert res["calls"] and all(w is True for w in res["calls"]), res["calls"]
    assert res["same"] and res["step"] == 1
    assert "mp_rank_00_model_states.pt" in res["refused"] and "resume=never" in res["refused"]
    assert res["executed"] is False


# --------------------------------------------------------------------------- servers


def test_servers_bind_loopback_by_default():
    from flows.cli import _parser
    from phases.inference.server import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert _parser().parse_args(["serve-model", "some/model"]).host == "127.0.0.1"
    stack = (ROOT / "flows" / "stack.py").read_text()
    assert "0.0.0.0" not in stack and stack.count('"127.0.0.1"') >= 2  # lifecycle up: Prefect and MLflow servers


# --------------------------------------------------------------------------- secrets in logs and MLflow

SECRETS = {
    "HF_TOKEN": "hf_SeCrEtToKeN1234567890abcdefghijkl",
    "AWS_ACCESS_KEY_ID": "AKIAQWERTYUIOPASDFGH",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRET",
    "DATABASE_URL": "postgresql://u:s3cr3tpass@h/db",
    "MLFLOW_TRACKING_PASSWORD": "mlfl0wPassw0rdSecret",
    "OPENAI_API_KEY": "sk-SeCrEt0123456789abcdefghijklmnopqrstuvwxyzAB",
}
NEEDLES = ("hf_SeCrEtToKeN", "AKIAQWERTYUIOPASDFGH", "bPxRfiCYzzSECRET", "s3cr3tpass", "mlfl0wPassw0rd", "sk-SeCrEt")


def _leaks(blob: str | bytes) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [n for n in NEEDLES if n in text]


def test_secrets_stay_out_of_logs_and_mlflow(tmp_path, monkeypatch, caplog, capfd):
    """The data phase on toy files, logged the way the pipeline's task logs it (tasks.phases:
    parent run, child run with the section as params, inputs, the MLflow sink, the manifest)."""
    from mlflow.tracking import MlflowClient

    from phases.config import DataConfig, SourceConfig, load_config
    from phases.metrics import MlflowSink
    from phases.registry import BY_NAME, run_phase, sources_ref
    from tasks import lineage

    home = tmp_path / "home"
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LIFECYCLE_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    prose = "The committee met on a grey morning to discuss the repairs to the old stone bridge over the river. "
    rows = [{"id": f"d{i}", "text": f"{prose * 2} Document {i} of the toy corpus."} for i in range(12)]
    rows.append({"id": "leak", "text": f"{prose} The deploy script sets aws_secret_access_key={SECRETS['AWS_SECRET_ACCESS_KEY']} here."})
    (corpus / "web.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(
        sources=(SourceConfig(name="web", kind="jsonl", path=str(corpus / "web.jsonl"), quality_filters=False),),
        spark_master="local[1]",
        spark_driver_memory="1g",
        val_fraction=0.2,
        shards=1,
        near_dedup={"enabled": False},
    )
    cfg = load_config("tiny").model_copy(update={"data": data, "experiment": "security"})
    caplog.set_level(logging.DEBUG)

    mlf = lineage.client(home)
    exp = lineage.experiment_id(mlf, cfg.experiment, home)
    tags = lineage.base_tags(cfg, None, lineage.git_commit())
    parent = lineage.start_parent(mlf, exp, cfg, tags, ["data"])
    inputs = {"sources": sources_ref(cfg)}
    key = BY_NAME["data"].key(cfg.data, inputs)
    child = lineage.start_child(mlf, exp, parent, "data", cfg.data.model_dump(mode="json"), tags, key)
    lineage.log_inputs(mlf, child, inputs)
    sink = MlflowSink(child, lineage.tracking_uri(home))
    ref, reused = run_phase("data", cfg.data, inputs, home, key=key, sink=sink, extra={"lineage": {"mlflow_run_id": child, **tags}})
    lineage.finish_child(mlf, child, ref, reused)
    lineage.run_link(home, exp, child)

    client = MlflowClient(tracking_uri=lineage.tracking_uri(home))
    leaks = {}
    for run_id in (parent, child):
        run = client.get_run(run_id)
        leaks[f"{run_id} params"] = _leaks(json.dumps(run.data.params))
        leaks[f"{run_id} tags"] = _leaks(json.dumps(run.data.tags))
        leaks[f"{run_id} metrics"] = _leaks(json.dumps(run.data.metrics))
        local = Path(client.download_artifacts(run_id, "", str(tmp_path / f"art-{run_id}")))
        for f in (p for p in local.rglob("*") if p.is_file()):
            leaks[f"artifact {f.name}"] = _leaks(f.read_bytes())
    leaks["mlflow.db"] = _leaks((tmp_path / "mlflow.db").read_bytes())
    for f in (p for p in Path(ref.uri).rglob("*") if p.is_file()):  # the manifest, and the redacted corpus itself
        leaks[f"output {f.relative_to(ref.uri)}"] = _leaks(f.read_bytes())
    out, err = capfd.readouterr()
    leaks["log records"] = _leaks(caplog.text)
    leaks["stdout/stderr (Spark's JVM included)"] = _leaks(out + err)
    assert {k: v for k, v in leaks.items() if v} == {}
    assert ref.summary["pii_redacted"] >= 1  # the planted key was found (and redacted) in the corpus


def test_mask_url_credentials():
    from phases.data.pii import mask_url_credentials

    assert mask_url_credentials("https://user:s3cr3tpass@mlflow.example.com/") == "https://user:***@mlflow.example.com/"
    assert mask_url_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_tracking_uri_password_is_not_shown(tmp_path, monkeypatch):
    from tasks import lineage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:s3cr3tpass@mlflow.example.com")
    assert "s3cr3tpass" not in lineage.run_link(tmp_path, "1", "abc")
    assert lineage.shown_tracking_uri(tmp_path) == "https://user:***@mlflow.example.com"
    assert lineage.tracking_uri(tmp_path) == "https://user:s3cr3tpass@mlflow.example.com"  # the client still gets the real one
