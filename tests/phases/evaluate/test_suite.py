"""The evaluation suite: task files from held-out data, loaded by the real lm-eval TaskManager;
bad tasks fail with one message before any model is involved; the gate's decision rule."""

import json

import pytest
import yaml

from phases.config import EvaluateConfig
from phases.errors import ConfigError, DataError
from phases.evaluate import gate
from phases.evaluate import suite as S

CFG = EvaluateConfig(num_examples=8, num_choices=3, context_chars=60, continuation_chars=20, instruct_examples=5, perplexity_docs=2, batch_size=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory, toy_data, toy_align):
    root = tmp_path_factory.mktemp("suite")
    info = S.build_suite(CFG, data_dir=toy_data, align_dir=toy_align, suite=root / "suite")
    tm = S.task_manager([S.runnable(root / "suite", root / "run")])
    return info, root, tm


def test_suite_files_and_task_names(built):
    info, root, _ = built
    suite = root / "suite"
    ppl = [t for t in info["tasks"] if t.startswith("lifecycle_ppl_")]
    assert info["tasks"][:3] == ["lifecycle_heldout_mc", "lifecycle_instruct_mc", "lifecycle_instruct_gen"]
    assert sorted(ppl) == ["lifecycle_ppl_code", "lifecycle_ppl_docs"]  # one per validation source
    assert info["items"]["lifecycle_heldout_mc"] == 8 and info["items"]["lifecycle_instruct_mc"] == 5
    for name in info["tasks"]:
        config = yaml.safe_load((suite / f"{name}.yaml").read_text())
        # Published YAMLs name their data relatively: nothing of the staging path leaks in.
        assert all(not v.startswith("/") for v in config["dataset_kwargs"]["data_files"].values())
        assert config["metadata"]["version"] == 1.0
    chats = [json.loads(x) for x in (suite / "instruct.jsonl").read_text().splitlines()]
    for c in chats:
        assert c["choices"][c["label"]] == c["answer"] and len(set(c["choices"])) == 3
        assert c["prompt"].endswith("<|assistant|>\n")  # the model's chat template, generation prompt added


def test_tasks_load_and_render(built):
    info, _, tm = built
    tasks = S.load_tasks(tm, info["tasks"])
    assert set(tasks) == set(info["tasks"])
    items = S.items(tasks)
    chats = [json.loads(x) for x in (built[1] / "suite" / "instruct.jsonl").read_text().splitlines()]
    # An instruction item renders as its prompt and its correct answer.
    assert [t for _, t in items["lifecycle_instruct_mc"]] == [f"{c['prompt']} {c['answer']}".strip() for c in chats]
    assert all(len(v) == info["items"][k] for k, v in items.items())
    mc = tasks["lifecycle_heldout_mc"]
    questions = [json.loads(x) for x in (built[1] / "suite" / "heldout_mc.jsonl").read_text().splitlines()]
    for doc, q in zip(mc.eval_docs, questions):
        assert (mc.doc_to_text(doc), mc.doc_to_choice(doc), mc.doc_to_target(doc)) == (q["question"], q["choices"], q["label"])


def test_fingerprint_changes_with_items(built, tmp_path):
    _, root, _ = built
    import shutil

    copy = tmp_path / "suite"
    shutil.copytree(root / "suite", copy)
    assert S.fingerprint(copy) == S.fingerprint(root / "suite")
    (copy / "heldout_mc.jsonl").write_text((copy / "heldout_mc.jsonl").read_text().replace("a", "b", 1))
    assert S.fingerprint(copy) != S.fingerprint(root / "suite")


def test_unknown_task_is_named(built):
    _, _, tm = built
    with pytest.raises(ConfigError, match=r"\['hellaswag'\] not found.*task_dirs"):
        S.load_tasks(tm, ["lifecycle_heldout_mc", "hellaswag"])


def test_missing_task_dir_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        S.task_manager([tmp_path / "nope"])


def _user_task(folder, name, data_file, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc"}],
        **extra,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))


def test_data_that_does_not_fit_its_template_is_named(tmp_path):
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"prompt": "2+2=", "options": ["4", "5"], "answer": 0}) + "\n")
    _user_task(tmp_path / "tasks", "my_arith", data)
    tm = S.task_manager([tmp_path / "tasks"])
    with pytest.raises(DataError, match=r"task my_arith.*does not (fit|load)") as e:
        S.load_tasks(tm, ["my_arith"])
    assert "answer" in str(e.value) or "question" in str(e.value)


def test_missing_data_file_is_named(tmp_path):
    _user_task(tmp_path / "tasks", "my_missing", tmp_path / "absent.jsonl")
    tm = S.task_manager([tmp_path / "tasks"])
    with pytest.raises(DataError, match=r"task my_missing.*absent\.jsonl|task my_missing does not load"):
        S.load_tasks(tm, ["my_missing"])


def test_invalid_yaml_is_named(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "broken.yaml").write_text("task: my_broken\ndataset_path: json\n  bad indent: [\n")
    tm = S.task_manager([folder])
    with pytest.raises(ConfigError, match=r"my_broken.*broken\.yaml.*do not parse|do not parse.*broken\.yaml"):
        S.load_tasks(tm, ["my_broken"])


def test_a_standard_task_on_local_data_loads(tmp_path):
    """A task in the user's own folder, data on local disk (the README's recipe)."""
    data = tmp_path / "items.jsonl"
    rows = [{"question": f"{i} + 1 =", "choices": [str(i + 1), str(i + 2)], "label": 0} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _user_task(tmp_path / "tasks", "my_arith", data)
    tasks = S.load_tasks(S.task_manager([tmp_path / "tasks"]), ["my_arith"])
    assert [t for _, t in S.items(tasks)["my_arith"]] == ["0 + 1 = 1", "1 + 1 = 2", "2 + 1 = 3", "3 + 1 = 4"]


def test_flatten_gives_mlflow_safe_names():
    results = {
        "results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "word_perplexity,none": 12.0, "word_perplexity_stderr,none": "N/A"}},
        "versions": {"t": 1.0},
        "n-samples": {"t": {"original": 10, "effective": 8}},
        "higher_is_better": {"t": {"acc": True, "word_perplexity": False}},
    }
    rows = S.flatten(results, "aligned")
    assert {(r["metric"], r["value"], r["stderr"], r["n"], r["higher_is_better"]) for r in rows} == {
        ("acc", 0.5, 0.1, 8, True),
        ("word_perplexity", 12.0, None, 8, False),
    }
    names = S.mlflow_metrics(rows)
    assert names == {"eval/aligned/t/acc": 0.5, "eval/aligned/t/acc_stderr": 0.1, "eval/aligned/t/word_perplexity": 12.0}
    assert S.lookup(rows, "aligned", "t/acc")["value"] == 0.5 and S.lookup(rows, "untrained", "t/acc") is None
    assert "± 0.1" in S.table_markdown(rows, ["aligned"])


OK = {"capability": {"ok": True}, "contamination": {"ok": True}}


@pytest.mark.parametrize(
    "challenger,champion,margin,higher,guards,outcome",
    [
        (0.5, None, 0.0, True, OK, "first_champion"),
        (0.6, 0.5, 0.0, True, OK, "promoted"),
        (0.5, 0.5, 0.0, True, OK, "kept_champion"),  # a tie keeps the champion
        (0.55, 0.5, 0.1, True, OK, "kept_champion"),  # better, but not by the margin
        (0.7, 0.5, 0.1, True, OK, "promoted"),
        (0.4, 0.5, 0.0, True, OK, "kept_champion"),
        (9.0, 10.0, 0.5, False, OK, "promoted"),  # perplexity: lower is better
        (11.0, 10.0, 0.0, False, OK, "kept_champion"),
        (0.9, 0.5, 0.0, True, {**OK, "capability": {"ok": False, "detail": "ppl +40%"}}, "blocked"),
    ],
)
def test_decide(challenger, champion, margin, higher, guards, outcome):
    d = gate.decide("t/acc", challenger, champion, margin=margin, higher_is_better=higher, guards=guards)
    assert d.outcome == outcome
    assert d.promote == (outcome in ("first_champion", "promoted"))
    assert d.to_dict()["guards"] == guards


def test_decide_same_model_is_not_a_promotion():
    d = gate.decide("t/acc", 0.5, 0.5, margin=0, higher_is_better=True, guards=OK, same_model=True)
    assert (d.promote, d.outcome) == (False, "already_champion")
