"""`costplan serve`'s JSON API through Starlette's test client: every endpoint answers exactly what the
CLI's --json prints, mistakes are HTTP 400 with the CLI's own line, and no request reads or writes a
path on the server or runs unbounded."""

import importlib.util
import json
import tempfile

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("httpx")
if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
    pytest.skip("needs python-multipart (pip install -e '.[serve]')", allow_module_level=True)

from starlette.testclient import TestClient  # noqa: E402

from costplan.cli import cli  # noqa: E402
from costplan.web.app import MAX_UPLOAD_BYTES, Settings, create_app  # noqa: E402
from costplan.web.workers import Timeout, WorkerPool  # noqa: E402

LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
            "max_position_embeddings": 4096}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COSTPLAN_CACHE", str(tmp_path_factory.mktemp("serve-cache")))
        with TestClient(create_app(Settings(workers=2, timeout_s=60))) as test_client:
            yield test_client


def cli_json(*args):
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_error(*args):
    """The message of the CLI's ``Error:`` line (the API answers it without ``Error: ``)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "\n" not in line
    return line.removeprefix("Error: ")


@pytest.mark.parametrize("endpoint,query,args", [
    ("estimate", "model=7b&method=lora&tokens=100M",
     ["--model", "7b", "--method", "lora", "--tokens", "100M"]),
    ("estimate", "model=8b&method=full&gpu=a100&seq-len=4096&grad-ckpt=true&zero=3",
     ["--model", "8b", "--method", "full", "--gpu", "a100", "--seq-len", "4096", "--grad-ckpt", "--zero", "3"]),
    ("estimate", "model=7b&method=lora&grad-ckpt=false&spot=true&lora-targets=all-linear",
     ["--model", "7b", "--method", "lora", "--no-grad-ckpt", "--spot", "--lora-targets", "all-linear"]),
    ("estimate", "model=mistral-7b&method=inference&prompt-len=1024&gen-len=512&micro-batch=16",
     ["--model", "mistral-7b", "--method", "inference", "--prompt-len", "1024", "--gen-len", "512",
      "--micro-batch", "16"]),
    ("estimate", "grad-ckpt=auto&tokens=&spot=false", []),
    ("compare", "model=8b&tokens=50M&gpu=a100", ["--model", "8b", "--tokens", "50M", "--gpu", "a100"]),
    ("plan", "model=7b&method=lora,qlora&tokens=100M&gpu=h100,a100&deadline=48h",
     ["--model", "7b", "--method", "lora,qlora", "--tokens", "100M", "--gpu", "h100,a100", "--deadline", "48h"]),
    ("cram", "gpu=a100&model=7b&dataset-tokens=50M", ["--gpu", "a100", "--model", "7b", "--dataset-tokens", "50M"]),
])
def test_every_endpoint_answers_exactly_the_cli_json(client, endpoint, query, args):
    response = client.get(f"/api/{endpoint}?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.text == cli_json(endpoint, *args)


def test_lists_of_models_and_gpus_are_the_cli_ones(client):
    for name in ("models", "gpus"):
        response = client.get(f"/api/{name}")
        assert response.status_code == 200 and response.text == cli_json(name)


@pytest.mark.parametrize("endpoint,query,args", [
    ("estimate", "model=llama-9b", ["estimate", "--model", "llama-9b"]),
    ("estimate", "model=lama-2-7b", ["estimate", "--model", "lama-2-7b"]),
    ("estimate", "gpu=h1000", ["estimate", "--gpu", "h1000"]),
    ("estimate", "tokens=-5", ["estimate", "--tokens=-5"]),
    ("estimate", "tokens=lots", ["estimate", "--tokens", "lots"]),
    ("estimate", "lora-rank=5000", ["estimate", "--lora-rank", "5000"]),
    ("estimate", "gpu=v100&precision=bf16", ["estimate", "--gpu", "v100", "--precision", "bf16"]),
    ("estimate", "method=dreambooth", ["estimate", "--method", "dreambooth"]),
    ("estimate", "tokns=5", ["estimate", "--tokns", "5"]),
    ("estimate", "global-batch=8&global-batch-tokens=1M", ["estimate", "--global-batch", "8",
                                                            "--global-batch-tokens", "1M"]),
    ("compare", "model=7b&tokens=0", ["compare", "--model", "7b", "--tokens", "0"]),
    ("plan", "model=7b", ["plan", "--model", "7b"]),
    ("plan", "model=7b&method=inference&tokens=1M", ["plan", "--model", "7b", "--method", "inference",
                                                     "--tokens", "1M"]),
    ("plan", "tokens=1B&deadline=soon", ["plan", "--tokens", "1B", "--deadline", "soon"]),
    ("cram", "hours=0", ["cram", "--hours", "0"]),
])
def test_bad_input_is_400_with_the_cli_line(client, endpoint, query, args):
    response = client.get(f"/api/{endpoint}?{query}")
    assert response.status_code == 400
    assert response.json() == {"error": cli_error(*args)}


def test_an_infeasible_plan_is_a_normal_answer(client):
    response = client.get("/api/plan?model=70b&method=full&tokens=10B&budget=1&gpu=h100")
    assert response.status_code == 200
    data = response.json()
    assert data["feasible"] is False and data["rows"] == [] and "budget" in data["why"]
    assert response.text == cli_json("plan", "--model", "70b", "--method", "full", "--tokens", "10B",
                                      "--budget", "1", "--gpu", "h100")


@pytest.mark.parametrize("model", ["/etc/passwd", "../tables", "./config.json", "~root", "tables/",
                                   "config.json", "C:\\models\\config.json", "a/b/c", "..", "acme/../../etc",
                                   "/", "org/name.json"])
def test_a_path_is_never_taken_as_a_model(client, model):
    response = client.get("/api/estimate", params={"model": model})
    assert response.status_code == 400
    assert "never reads paths" in response.json()["error"]


def test_relative_names_are_not_read_from_the_server_folder(client):
    """A name that happens to be a file or folder where the server started is still a preset name or a Hub id."""
    response = client.get("/api/estimate?model=tests")
    assert response.status_code == 400 and "Unknown model 'tests'" in response.json()["error"]
    hub_like = client.get("/api/estimate?model=tables/models.csv")
    assert hub_like.status_code == 400 and "not in the local Hugging Face cache" in hub_like.json()["error"]


@pytest.mark.parametrize("query", ["profile=/etc/passwd", "profile=profile.json"])
def test_options_that_take_a_server_path_are_refused(client, query):
    response = client.get(f"/api/estimate?{query}")
    assert response.status_code == 400 and "never reads or writes" in response.json()["error"]


def test_report_output_folder_cannot_be_chosen(client):
    response = client.get("/api/report?out=/tmp/elsewhere")
    assert response.status_code == 400 and "never reads or writes" in response.json()["error"]


def test_scalars_only_and_a_bounded_search(client):
    repeated = client.get("/api/estimate?method=lora&method=full")
    assert repeated.status_code == 400 and "once" in repeated.json()["error"]
    wide = client.get("/api/plan?model=7b&tokens=1B&max-gpus=16384")
    assert wide.status_code == 400 and "at most 1,024" in wide.json()["error"]
    long_value = client.get("/api/estimate", params={"model": "x" * 500})
    assert long_value.status_code == 400


def test_uploaded_config_answers_like_the_same_file_on_the_command_line(client, tmp_path):
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    expected = cli_json("estimate", "--model", str(folder / "config.json"), "--method", "qlora", "--tokens", "20M")
    files = {"config": ("my-llama.json", json.dumps(LLAMA_7B), "application/json")}
    multipart = client.post("/api/estimate?method=qlora&tokens=20M", files=files)
    assert multipart.status_code == 200, multipart.text
    assert multipart.text == expected
    raw = client.post("/api/estimate?method=qlora&tokens=20M", content=json.dumps(LLAMA_7B),
                      headers={"content-type": "application/json"})
    assert raw.status_code == 200
    assert raw.json()["model"] == "uploaded-model" and raw.json()["params_total"] == 6_738_415_616
    for endpoint, query in (("compare", "tokens=10M"), ("plan", "tokens=10M&gpu=h100"), ("cram", "gpu=a100")):
        response = client.post(f"/api/{endpoint}?{query}", files=files)
        assert response.status_code == 200, response.text


def test_a_bad_upload_gets_the_cli_message_without_server_paths(client, tmp_path):
    bad = {"model_type": "mamba"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(bad))
    response = client.post("/api/estimate", files={"config": ("config.json", json.dumps(bad), "application/json")})
    assert response.status_code == 400
    message = response.json()["error"]
    # The CLI names the file (shortened when its path is long); the page names the upload, then the same words.
    cli = cli_error("estimate", "--model", str(path))
    words = message.removeprefix("'uploaded config.json': ")
    assert words != message and cli.startswith("'") and cli.endswith(": " + words)
    assert message.startswith("'uploaded config.json': model_type 'mamba' is not supported")
    assert tempfile.gettempdir() not in message
    broken = client.post("/api/estimate", content="{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "is not a readable config.json" in broken.json()["error"]


def test_an_upload_too_large_is_refused_before_it_is_written(client):
    big = json.dumps({**LLAMA_7B, "padding": "x" * MAX_UPLOAD_BYTES})
    for kwargs in ({"content": big, "headers": {"content-type": "application/json"}},
                   {"files": {"config": ("config.json", big, "application/json")}}):
        response = client.post("/api/estimate", **kwargs)
        assert response.status_code == 413 and "larger than 64 KiB" in response.json()["error"]


def test_upload_and_model_together_are_ambiguous(client):
    response = client.post("/api/estimate?model=7b", content=json.dumps(LLAMA_7B))
    assert response.status_code == 400 and "not both" in response.json()["error"]


def test_hub_ids_come_from_the_local_cache_only(client, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--Tiny-Llama-7B" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA_7B))
    (cache / "models--acme--Tiny-Llama-7B" / "refs").mkdir()
    (cache / "models--acme--Tiny-Llama-7B" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    found = client.get("/api/estimate?model=acme/Tiny-Llama-7B&method=lora")
    assert found.status_code == 200, found.text
    assert found.json()["model"] == "Tiny-Llama-7B" and found.json()["params_total"] == 6_738_415_616
    missing = client.get("/api/estimate?model=acme/not-downloaded")
    assert missing.status_code == 400 and "not in the local Hugging Face cache" in missing.json()["error"]


def test_report_downloads_as_costplan_report_writes_it(client):
    md = client.get("/api/report?model=7b&tokens=100M&plan-methods=lora&format=md")
    assert md.status_code == 200, md.text
    assert md.headers["content-disposition"] == 'attachment; filename="costplan-report.md"'
    assert md.text.startswith("# costplan report: llama-2-7b on h100-sxm")
    data = client.get("/api/report?model=7b&tokens=100M&plan-methods=lora&format=json")
    assert data.status_code == 200 and data.json()["comparison"][0]["method"] == "inference"
    wrong = client.get("/api/report?format=pdf")
    assert wrong.status_code == 400 and "md, html, json" in wrong.json()["error"]
    scratch = client.app.state.runtime.scratch
    assert list((scratch / "requests").iterdir()) == []  # each request's folder is gone once it is answered
    assert list((scratch / "workers" / "cwd").iterdir()) == []


def test_options_describe_what_each_command_takes(client):
    options = client.get("/api/options").json()
    estimate = {o["name"]: o for o in options["estimate"]}
    assert estimate["grad-ckpt"]["flag"] and estimate["seq-len"]["flag"] is False
    assert "lora" in estimate["method"]["choices"]
    assert "profile" not in estimate and "json" not in estimate
    assert {"deadline", "budget", "max-gpus"} <= {o["name"] for o in options["plan"]}


def test_page_and_assets_are_served_with_no_outside_references(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("index.html", "app.js", "style.css"):
        text = client.get(f"/static/{asset}").text
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert client.get("/api/nothing").status_code == 404


def test_other_host_names_are_refused_when_serving_localhost():
    app = create_app(allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://rebound.example").get("/").status_code == 400


def test_a_slow_request_is_stopped_with_a_clear_message(tmp_path_factory):
    with TestClient(create_app(Settings(workers=1, timeout_s=0.001))) as slow:
        response = slow.get("/api/plan?model=70b&method=lora,qlora,full&tokens=10B&precision=bf16,fp8")
    assert response.status_code == 504
    assert response.json()["error"].startswith("The plan search took longer than 0.001 s and was stopped.")


def test_a_stopped_worker_is_replaced(tmp_path):
    pool = WorkerPool(1, str(tmp_path))
    try:
        pool.start()
        with pytest.raises(Timeout):
            pool.run(["plan", "--model", "70b", "--method", "lora,qlora,full", "--tokens", "10B", "--json"], 0.001)
        outcome = pool.run(["estimate", "--json"], 60)
        assert outcome.status == 200 and json.loads(outcome.text)["model"] == "llama-2-7b"
    finally:
        pool.close()
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing written where the workers run


def test_serve_is_a_command_with_localhost_defaults():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "127.0.0.1" in result.output and "8000" in result.output
