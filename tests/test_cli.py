"""Explicit requests fail explicitly (issue 15): every command refuses a usage error with one line and a
non-zero status, never a traceback; --help exits 0; a named dataset that is not prepared is an error;
`make clean` keeps runs/ and `make demo DATASET=...` trains on that dataset; atomic writes."""
import json
import os
import subprocess
import sys

import pytest

from reid_tf import fileio
from tests import fixtures

COMMANDS = ("reid_tf.train", "reid_tf.evaluate", "experiments.table5", "data_tools.prepare_viper",
            "data_tools.prepare_cuhk01", "data_tools.prepare_cuhk03", "data_tools.make_synthetic",
            "experiments.reproduce", "experiments.curve")


def run(module, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=fixtures.REPO, timeout=timeout, env=env)


def assert_one_line_error(proc, *expected):
    """Non-zero status, no traceback, and one error line (absl "E..." or "error: ...") holding
    every expected fragment."""
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("E1", "E0", "error:"))
              and "cuda" not in line.lower()]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in expected:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_zero(module):
    proc = run(module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--" in proc.stdout


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("f") / "plain_file"
    path.write_text("not a folder")
    return str(path)


@pytest.mark.parametrize("args, expected", [
    (["--epochs=0"], ["--epochs", "> 0"]),
    (["--epochs=-1"], ["--epochs", "> 0"]),
    (["--batch_size=0"], ["--batch_size=0", ">= 3"]),
    (["--batch_size=2"], ["--batch_size=2", ">= 3"]),
    (["--max_minutes=0"], ["--max_minutes", "> 0"]),
    (["--max_steps=0"], ["--max_steps", "> 0"]),
    (["--data_dir={file}"], ["is a file"]),
    (["--workdir={file}/run"], ["cannot be created or written"]),
    (["--model=nope"], ["nope", "l23"]),
    (["--dataset=nope"], ["nope", "viper"]),
    (["--pairing=shared", "--recipe=paper_xcorr", "--shared_images_per_camera=2"],
     ["paper_xcorr", "K = 1", "--shared_images_per_camera=2"]),
    (["--recipe=paper_xcorr", "--shared_images_per_camera=2"],  # shared by default with this recipe
     ["paper_xcorr", "its default pairing", "--pairing=per_pair", "--shared_images_per_camera=2"]),
    (["--pairing=shared", "--strategy=mirrored"], ["--pairing=shared", "mirrored"]),
    (["--threads=-1"], ["--threads=-1", ">= 0"]),
    (["--precise_bn=-1"], ["--precise_bn=-1", ">= 0"]),
])
def test_train_refuses_meaningless_values(args, expected, a_file, tmp_path):
    workdir = str(tmp_path / "run")
    args = [a.format(file=a_file) for a in args]
    proc = run("reid_tf.train", f"--workdir={workdir}", f"--data_dir={tmp_path / 'data'}", *args)
    assert_one_line_error(proc, *expected)
    assert not os.path.exists(os.path.join(workdir, "run.json"))


def test_named_dataset_that_is_not_prepared_is_an_error(tmp_path):
    """Before: trained on synthetic data into the run named for VIPeR (its run.json said synthetic)."""
    workdir = tmp_path / "viper_t0"
    proc = run("reid_tf.train", "--dataset=viper", f"--data_dir={tmp_path / 'data'}", f"--workdir={workdir}")
    assert_one_line_error(proc, "viper is not prepared", "python -m data_tools.prepare_viper")
    assert not workdir.exists() and not (tmp_path / "data" / "synthetic").exists()


@pytest.mark.parametrize("module, args, expected", [
    ("reid_tf.evaluate", ["--workdir={tmp}/none"], ["not a reid_tf.train workdir"]),
    ("reid_tf.evaluate", [], ["--workdir"]),
    ("reid_tf.evaluate", ["--checkpoint={tmp}/none.keras"], ["not found"]),
    ("experiments.table5", ["--presets=nope"], ["nope"]),
    ("data_tools.prepare_viper", ["--src={tmp}/none", "--out={tmp}/out"], ["folder not found"]),
    ("data_tools.prepare_cuhk03", ["--mat={tmp}/none.mat", "--out={tmp}/out"], ["file not found"]),
    ("data_tools.make_synthetic", ["--out={tmp}/s", "--identities=0"], ["identities"]),
    ("experiments.reproduce", ["--table=9", "--data_dir={tmp}"], ["table 9"]),
])
def test_other_commands_refuse_in_one_line(module, args, expected, tmp_path):
    proc = run(module, *[a.format(tmp=tmp_path) for a in args])
    assert_one_line_error(proc, *expected)


def test_preparation_that_finds_no_usable_image_says_what_it_found(tmp_path):
    """Before: a campus/ of .jpg files with --expect_identities=0 wrote an empty manifest."""
    campus = tmp_path / "CUHK01" / "campus"
    campus.mkdir(parents=True)
    for i in range(3):
        (campus / f"000{i + 1}001.jpg").write_bytes(b"x")
    proc = run("data_tools.prepare_cuhk01", f"--src={tmp_path / 'CUHK01'}", f"--out={tmp_path / 'out'}",
               "--expect_identities=0")
    assert_one_line_error(proc, "no .png images", "3 .jpg")
    assert not (tmp_path / "out" / "manifest.json").exists()
    cam_a = tmp_path / "VIPeR" / "cam_a"
    cam_a.mkdir(parents=True)
    (cam_a / "000_45.png").write_bytes(b"x")
    proc = run("data_tools.prepare_viper", f"--src={tmp_path / 'VIPeR'}", f"--out={tmp_path / 'out'}")
    assert_one_line_error(proc, "no .bmp images", "1 .png")


def make(*args):
    return subprocess.run(["make", "-n", *args], capture_output=True, text=True, cwd=fixtures.REPO,
                          timeout=60).stdout


def test_make_clean_keeps_runs_and_demo_takes_a_dataset():
    clean = make("clean").split()
    assert "rm" in clean and not [w for w in clean if w.strip("'\"").rstrip("/").startswith(("runs", "./runs"))]
    assert "--dataset=viper" in make("demo", "DATASET=viper")
    assert "--dataset" not in make("demo")  # the main job: the synthetic default


def test_atomic_write_is_all_or_nothing(tmp_path):
    path = str(tmp_path / "run.json")
    fileio.write_json(path, {"step": 1})
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write('{"step": ')  # a writer that dies half-way
            raise RuntimeError("killed")
    with open(path) as f:
        assert json.load(f) == {"step": 1}  # the old file is intact ...
    assert os.listdir(tmp_path) == ["run.json"]  # ... and no temporary is left


def test_one_atomic_write_helper():
    """Every os.replace of the project is fileio's (issue 14: one helper, used everywhere)."""
    hits = []
    for top in ("reid_tf", "data_tools", "experiments", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(fixtures.REPO, top)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name)) as f:
                        if "os.replace(" in f.read():
                            hits.append(os.path.relpath(os.path.join(folder, name), fixtures.REPO))
    assert hits == [os.path.join("reid_tf", "fileio.py")]
