"""Every input gets an honest answer (issue 11): files, config.json fields, profiles, paths, the
Python API and numeric options. Each test reproduces one class of defect found by fuzzing."""

import json
import os

import pytest
from click.testing import CliRunner

from costplan.cli import cli
from costplan.errors import CostplanError

LLAMA = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}


def one_error_line(result, *fragments):
    """Exit code 2, exactly one line on the output, starting with ``Error:``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


# --- files ------------------------------------------------------------------------------------

def test_a_folder_a_missing_file_and_a_long_name_are_one_line(tmp_path):
    one_error_line(run("estimate", "-m", tmp_path / "nope.json"), "No config.json")
    (tmp_path / "config.json").mkdir()  # a folder is looked into for its config.json
    one_error_line(run("estimate", "-m", tmp_path / "config.json"), "No config.json", "config.json/config.json'")
    one_error_line(run("estimate", "-m", "a" * 300), "Unknown model", "(300 characters)")
    one_error_line(run("estimate", "-m", "a" * 300 + ".json"), "File name too long", "(305 characters)")
    one_error_line(run("estimate", "-m", ""), "empty")


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA))
    real_open = os.open

    def refuse(name, *args, **kwargs):  # tests run as root here, where chmod 000 does not stop a read
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    one_error_line(run("estimate", "-m", path), "Permission denied")


def test_deep_nesting_large_files_and_non_json_numbers(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    one_error_line(run("estimate", "-m", deep), "nested too deeply")
    big = tmp_path / "big.json"
    big.write_text(json.dumps(dict(LLAMA, padding="x" * (9 * 2**20))))
    one_error_line(run("estimate", "-m", big), "larger than 8 MiB")
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(dict(LLAMA, hidden_size=float("nan"))))
    one_error_line(run("estimate", "-m", nan), "NaN is not a JSON number")


# --- config.json fields -------------------------------------------------------------------------

@pytest.mark.parametrize("change,fragments", [
    ({"hidden_size": 1e200}, ["hidden_size", "above 1,000,000", "widest published"]),
    ({"hidden_size": int("9" * 200)}, ["hidden_size", "above 1,000,000"]),
    ({"hidden_size": 10**100}, ["hidden_size"]),
    ({"num_hidden_layers": 10**6}, ["num_hidden_layers 1,000,000 is above 10,000"]),
    ({"num_attention_heads": 0}, ["num_attention_heads must be a positive integer"]),
    ({"num_key_value_heads": 0}, ["num_key_value_heads must be a positive integer"]),
    ({"num_key_value_heads": 5}, ["multiple of num_kv_heads"]),
    ({"hidden_size": 4095}, ["multiple of the 32 attention heads"]),
    ({"vocab_size": 10**9}, ["vocab_size", "256,000"]),
    ({"max_position_embeddings": 10**12}, ["max_position_embeddings", "10M tokens"]),
    ({"intermediate_size": 4.5}, ["intermediate_size must be an integer"]),
    ({"intermediate_size": "11008"}, ["intermediate_size must be an integer"]),
    ({"num_hidden_layers": True}, ["num_hidden_layers must be an integer"]),
    ({"model_type": ["llama"]}, ["model_type", "not supported"]),
])
def test_config_fields_are_checked_with_their_names(tmp_path, change, fragments):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, **change)))
    one_error_line(run("estimate", "-m", path, "--brief"), *fragments)


def test_gpt2_and_bert_fields(tmp_path):
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
            "vocab_size": 50257}
    for change, fragment in (({"n_inner": 1e200}, "ffn_size"), ({"n_head": 0}, "n_head must be a positive"),
                             ({"resid_pdrop": "x"}, "resid_pdrop must be a number"),
                             ({"attn_pdrop": 1.5}, "attention_dropout must be a probability")):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(dict(gpt2, **change)))
        one_error_line(run("estimate", "-m", path, "--brief"), fragment)


def test_a_model_at_the_limits_still_answers(tmp_path):
    """The ranges still accept real work: a 128K context, a 256K vocabulary."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(LLAMA, vocab_size=256_000, max_position_embeddings=131_072)))
    result = run("estimate", "-m", path, "--json", "--seq-len", "131072", "--method", "qlora")
    assert result.exit_code == 0, result.output


def test_model_spec_ranges_cover_every_source():
    from costplan.model import ModelSpec

    with pytest.raises(ValueError, match="num_layers 20,000 is above 10,000"):
        ModelSpec(name="x", family="llama", hidden_size=64, num_layers=20_000, num_heads=4, num_kv_heads=4,
                  head_dim=16, ffn_size=128, vocab_size=100, max_positions=128)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        ModelSpec(name="x", family="llama", hidden_size=64.0, num_layers=2, num_heads=4, num_kv_heads=4,
                  head_dim=16, ffn_size=128, vocab_size=100, max_positions=128)
