"""Hub ids (org/name) resolve from a local Hugging Face cache, offline; fetching is config.json only."""

import json

import pytest
from click.testing import CliRunner

from costplan import hub
from costplan.cli import cli

# Llama-3.1-8B's config.json as published (the architecture numbers; rope scaling left out).
LLAMA_31_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
               "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
               "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
               "tie_word_embeddings": False, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu"}


@pytest.fixture(autouse=True)
def _fresh_hub_state(monkeypatch):
    """Each test starts with no Hub remembered as silent and no preset standing in."""
    monkeypatch.setattr(hub, "_SILENT_SINCE", {})
    monkeypatch.setattr(hub, "_STOOD_IN", {})


def fake_cache(root, repo_id, files, commit="0e9e39f249a16976918f6564b8830bc894c89659"):
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (snapshot / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return snapshot


def run_json(*args):
    result = CliRunner().invoke(cli, ["estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch, variable):
    monkeypatch.delenv("HF_HUB_CACHE")
    cache = tmp_path / "hub" if variable == "HF_HOME" else tmp_path
    monkeypatch.setenv(variable, str(tmp_path))
    fake_cache(cache, "meta-llama/Llama-3.1-8B", {"config.json": LLAMA_31_8B})
    data = run_json("-m", "meta-llama/Llama-3.1-8B", "--method", "lora")
    assert data["model"] == "meta-llama/Llama-3.1-8B"
    assert data["params_total"] == 8_030_261_248  # the published count of Llama-3.1-8B
    assert any("local Hugging Face cache" in a and "nothing downloaded" in a for a in data["assumptions"])


def test_refs_main_picks_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    old = dict(LLAMA_31_8B, num_hidden_layers=2)
    fake_cache(tmp_path, "org/model", {"config.json": old}, commit="a" * 40)
    fake_cache(tmp_path, "org/model", {"config.json": LLAMA_31_8B}, commit="b" * 40)  # refs/main -> b
    (tmp_path / "models--org--model" / "refs" / "main").write_text("a" * 40)
    assert hub.cached_file("org/model", "config.json").parent.name == "a" * 40


def test_offline_and_uncached_is_one_clear_line():
    result = CliRunner().invoke(cli, ["estimate", "-m", "someone/Not-A-Preset-7B"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: someone/Not-A-Preset-7B has no config.json in the local")
    assert "HF_HUB_OFFLINE" in lines[0]


@pytest.mark.parametrize("repo,key,params", [
    ("meta-llama/Llama-3.1-8B", "llama-3.1-8b", 8_030_261_248),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b", 8_030_261_248),  # an alias, less "-Instruct"
    ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b", 494_032_768),
    ("Qwen/Qwen3-4B-Instruct-2507", "qwen3-4b", 4_022_468_096),  # less a date code and "-Instruct"
    ("unsloth/llama-3.2-1b-instruct-unsloth-bnb-4bit", "llama-3.2-1b", 1_235_814_400),  # Unsloth's 4-bit copy
])
def test_offline_and_uncached_a_preset_of_the_same_name_stands_in_and_says_so(monkeypatch, repo, key, params):
    probes = []
    monkeypatch.setattr(hub, "_reachable", lambda host, timeout=3.0: probes.append(host) or False)
    data = run_json("-m", repo, "--method", "lora")
    assert data["model"] == repo and data["params_total"] == params
    assert any(f"the {key} preset of that name stands in" in a for a in data["assumptions"])
    assert any("--method qlora" in a for a in data["assumptions"]) == ("bnb-4bit" in repo)
    run_json("-m", repo, "--method", "qlora")  # the same id again: decided once, nothing probed
    assert len(probes) <= 1


def test_online_it_fetches_config_json_only_and_says_so(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(fake_cache(tmp_path, repo_id, {filename: LLAMA_31_8B}) / filename)

    monkeypatch.setattr(hub, "_reachable", lambda host, timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    data = run_json("-m", "someone/llama-like", "--method", "qlora")
    assert asked == [("someone/llama-like", "config.json")]
    assert any("fetched from the Hugging Face Hub" in a and "no weights" in a for a in data["assumptions"])


def test_unreachable_hub_fails_fast_in_one_line(monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "_reachable", lambda host, timeout=3.0: False)
    result = CliRunner().invoke(cli, ["estimate", "-m", "nobody/nothing"])
    assert result.exit_code == 2 and "cannot be reached" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_name_lookup_that_hangs_is_given_up_on_after_the_timeout(monkeypatch):
    # socket.create_connection's timeout does not bound getaddrinfo: an unanswering resolver held an
    # offline `estimate -m org/name` 5 s per lookup.
    import socket
    import threading
    import time

    release = threading.Event()
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: release.wait(30) or None)
    start = time.perf_counter()
    try:
        assert hub._reachable("huggingface.co", timeout=0.2) is False
        assert time.perf_counter() - start < 2
    finally:
        release.set()


def test_a_hub_that_did_not_answer_is_not_asked_again_at_once(monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes = []
    monkeypatch.setattr(hub, "_reachable", lambda host, timeout=3.0: probes.append(host) or False)
    for repo in ("nobody/first-model", "nobody/second-model"):
        result = CliRunner().invoke(cli, ["estimate", "-m", repo])
        assert result.exit_code == 2 and "cannot be reached" in result.output
    assert probes == ["huggingface.co"]


def test_paths_and_presets_are_not_hub_ids(tmp_path):
    assert hub.is_repo_id("meta-llama/Llama-3.1-8B")
    assert not hub.is_repo_id("7b") and not hub.is_repo_id("./x/config.json") and not hub.is_repo_id("a/b/c")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    (tmp_path / "org" / "name" / "config.json").write_text(json.dumps(LLAMA_31_8B))
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not hub.is_repo_id("org/name")  # an existing folder wins
        assert run_json("-m", "org/name")["params_total"] == 8_030_261_248
    finally:
        os.chdir(cwd)


def test_a_config_cached_later_replaces_the_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert run_json("-m", "meta-llama/Llama-3.1-8B", "--method", "lora")["params_total"] == 8_030_261_248  # preset
    fake_cache(tmp_path, "meta-llama/Llama-3.1-8B", {"config.json": dict(LLAMA_31_8B, num_hidden_layers=2)})
    data = run_json("-m", "meta-llama/Llama-3.1-8B", "--method", "lora")
    assert data["params_total"] == 2 * 218_112_000 + 2 * 128256 * 4096 + 4096  # two layers, embeddings, head, norm
    assert not any("stands in" in a for a in data["assumptions"])
