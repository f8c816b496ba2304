"""The estimate path stays light, and the reference tables travel inside the wheel."""

import json
import subprocess
import sys
import zipfile

import pytest

HEAVY = ("torch", "transformers", "peft", "pynvml", "pandas", "matplotlib", "numpy")
WEB = ("costplan.web", "costplan.web.app", "costplan.web.args", "costplan.web.workers", "starlette", "uvicorn",
       "multipart", "httpx")  # `costplan serve` only


def test_estimate_never_imports_heavy_libraries():
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from costplan.cli import cli\n"
        "r = CliRunner().invoke(cli, ['estimate', '--model', '7b', '--method', 'lora', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(cli, ['estimate', '--model', '70b', '--method', 'inference'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(json.dumps(sorted(m for m in {HEAVY + WEB!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_wheel_carries_the_tables_and_estimates_from_them(tmp_path):
    pytest.importorskip("hatchling")
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(root)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("costplan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for table in ("gpus", "prices", "models", "efficiency"):
        assert f"costplan/_tables/{table}.csv" in names
    for asset in ("index.html", "app.js", "style.css"):  # the page of `costplan serve` works offline
        assert f"costplan/web/static/{asset}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import costplan, costplan.tables as t; e = costplan.estimate('8b', 'lora'); "
            "print(t.tables_dir(), e.params_total)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""})
    where, params = out.stdout.split()
    assert where.startswith(str(site)) and where.endswith("_tables")
    assert int(params) == 8_030_261_248


def test_the_console_script_ends_fast_with_the_commands_exit_code_and_output(tmp_path):
    # main() runs the atexit handlers, flushes and ends without interpreter teardown.
    ok = subprocess.run([sys.executable, "-m", "costplan", "estimate", "--model", "7b", "--method", "lora", "--json"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)["params_total"] == 6_738_415_616
    bad = subprocess.run([sys.executable, "-m", "costplan", "estimate", "--model", "no-such-model"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("Error: ") and len(bad.stderr.strip().splitlines()) == 1
    code = ("import atexit, sys; atexit.register(lambda: print('atexit ran')); "
            "sys.argv = ['costplan', '--version']; from costplan.cli import main; main()")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.rstrip().endswith("atexit ran")
