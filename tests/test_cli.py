"""Explicit requests fail explicitly: every command refuses a usage error with one line and a
non-zero status, never a traceback; --help exits 0; a named dataset that is not prepared is an error;
`make clean` keeps runs/ and `make demo DATASET=...` trains on that dataset; atomic writes."""
import json
import logging as std_logging
import os
import re
import subprocess
import sys
import types
from unittest import mock

import pytest

from reid_tf import callbacks, cli, fileio, progress
from tests import fixtures

# Every command of the project (a file with a __main__ block; test_every_command_is_listed).
COMMANDS = ("reid_tf.train", "reid_tf.evaluate", "reid_tf.rank", "reid_tf.export", "experiments.table5",
            "experiments.reproduce", "experiments.curve", "experiments.market1501", "data_tools.prepare_viper",
            "data_tools.prepare_cuhk01", "data_tools.prepare_cuhk03", "data_tools.prepare_cuhk03_np",
            "data_tools.prepare_market1501", "data_tools.prepare_dukemtmcreid", "data_tools.make_synthetic",
            "benchmarks.bench_scoring", "benchmarks.bench_data", "benchmarks.bench_rank",
            "benchmarks.bench_large_gallery", "benchmarks.profile_train", "experiments.make_card",
            "experiments.check_results")
# Flags a command takes from a shared module (absl's --help lists only the main file's own).
SHARED_FLAGS = {"data_tools.prepare_market1501": ("--src", "--out"),
                "data_tools.prepare_dukemtmcreid": ("--src", "--out"),
                "data_tools.prepare_cuhk03_np": ("--src", "--out", "--kind"),
                "reid_tf.rank": ("--model", "--query", "--gallery", "--out", "--top")}


def run(module, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=fixtures.REPO, timeout=timeout, env=env)


def assert_one_line_error(proc, *expected):
    """Non-zero status, no traceback, and one error line ("error: ...", reid_tf.cli) holding every
    expected fragment."""
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in expected:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_zero(module):
    """--help: status 0, every flag listed (those of shared modules too), the console switch named,
    and nothing on stderr (no TensorFlow start-up lines)."""
    proc = run(module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--" in proc.stdout and cli.VERBOSE_ENV in proc.stdout
    for flag in SHARED_FLAGS.get(module, ()):
        assert f"  {flag}:" in proc.stdout, (flag, proc.stdout)
    assert proc.stderr == ""


def read(path):
    with open(path) as f:
        return f.read()


def test_every_command_is_listed():
    mains = {os.path.relpath(os.path.join(folder, name), fixtures.REPO)[:-3].replace(os.sep, ".")
             for top in ("reid_tf", "data_tools", "experiments", "benchmarks")
             for folder, _, files in os.walk(os.path.join(fixtures.REPO, top)) for name in files
             if name.endswith(".py") and 'if __name__ == "__main__"' in read(os.path.join(folder, name))}
    assert mains - {"reid_tf.cli"} == set(COMMANDS)


def test_a_command_line_absl_cannot_parse_is_one_error_line():
    proc = run("data_tools.prepare_cuhk03_np", "--kind=both", "--nonsense=1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "see --help" in proc.stderr


# ---- the console ----------------------------------------------------------------------------------
def test_tensorflow_start_up_is_quiet_unless_asked():
    """Importing reid_tf before TensorFlow keeps its C++ start-up and runtime lines (oneDNN, CUDA,
    cuInit, XLA) off stderr; REID_TF_VERBOSE=1 lets them through (the check that the quiet one is
    not quiet by accident: this TensorFlow always writes its absl::InitializeLog line)."""
    code = ("import reid_tf, tensorflow as tf; f = tf.function(lambda x: 2 * x, jit_compile=True); "
            "print(float(f(tf.ones(()))))")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", cli.VERBOSE_ENV)}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**env, cli.VERBOSE_ENV: "1"})
    assert quiet.returncode == loud.returncode == 0 and quiet.stdout == loud.stdout == "2.0\n"
    assert quiet.stderr == "", quiet.stderr
    assert "absl::InitializeLog" in loud.stderr, loud.stderr


def test_short_log_lines_and_no_tensorflow_info():
    formatter = cli.ShortFormatter()

    def record(level, msg, path="/x/reid_tf/train.py"):
        return std_logging.LogRecord("absl", level, path, 1, msg, None, None)

    assert re.fullmatch(r"\d\d:\d\d:\d\d step 3/9", formatter.format(record(std_logging.INFO, "step 3/9")))
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning: odd", formatter.format(record(std_logging.WARNING, "odd")))
    assert formatter.format(record(std_logging.ERROR, "bad — do this")) == "error: bad — do this"
    saver = os.path.join("", "site-packages", "tensorflow", "python", "checkpoint", "functional_saver.py")
    assert not cli._not_tensorflow_info(record(std_logging.INFO, "Sharding callback duration: 84", saver))
    assert cli._not_tensorflow_info(record(std_logging.WARNING, "a real one", saver))
    assert cli._not_tensorflow_info(record(std_logging.INFO, "checkpoint ckpt-20"))


def test_first_eta_is_measured_after_the_warm_up():
    """Tracing (100 s for step 1) and the first checkpoint stay out of the ETA: before the first
    checkpoint the line says "measuring"; the first ETA is the steady 1 s per step. Measured from
    the start, it would say (100 + 24) / 25 s per step: 5x too long."""
    clock = types.SimpleNamespace(now=0.0)
    step = types.SimpleNamespace(value=0)
    logger = callbacks.ProgressLogger(total_steps=125, batch_size=4, every_seconds=0.0)
    logger.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(
        iterations=types.SimpleNamespace(numpy=lambda: step.value))))
    lines = []
    with mock.patch.object(callbacks.time, "monotonic", lambda: clock.now), \
         mock.patch.object(callbacks.logging, "info", lambda fmt, *args: lines.append(fmt % args)):
        logger.on_train_begin()
        for n in range(1, 36):
            clock.now += 100.0 if n == 1 else 1.0
            step.value = n
            logger.on_train_batch_end(n - 1, {"loss": 1.0})
            if n == 25:  # the end of the first checkpoint interval, after its save
                clock.now += 5.0
                logger.on_epoch_end(0)
    etas = [line.rsplit("ETA ", 1)[1] for line in lines]
    assert etas[:29] == ["measuring…"] * 29  # steps 1–25, then 4 steps too few to measure
    assert etas[29] == progress.hms(125 - 30)  # step 30: 1 s per step since the checkpoint
    assert etas[-1] == progress.hms(125 - 35)


# ---- a run's workdir: finished, unfinished, and what to do next ----------------------------------
def fake_run(workdir, step, total, checkpoint_step, rank1=None):
    """The files train writes that finished_run reads: run.json, model.json, the checkpoint state
    and eval.json (of the checkpoint, only an index file: what names the newest one)."""
    os.makedirs(os.path.join(workdir, "checkpoints"))
    fileio.write_json(os.path.join(workdir, "run.json"), {"total_steps": total})
    fileio.write_json(os.path.join(workdir, "model.json"), {"step": step, "precise_bn": 0})
    with open(os.path.join(workdir, "checkpoints", "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{checkpoint_step}"\n')
    open(os.path.join(workdir, "checkpoints", f"ckpt-{checkpoint_step}.index"), "w").close()
    if rank1 is not None:
        fileio.write_json(os.path.join(workdir, "eval.json"), {"summary": {"eq7": {"rank": {"1": {"mean": rank1}}}}})


def test_training_a_finished_workdir_again_says_so_in_one_line_and_exits_0(tmp_path):
    """make demo a second time: before, an error asking for a --resume that make demo does not take."""
    workdir = str(tmp_path / "demo")
    fake_run(workdir, 465, 465, 465, rank1=42.25)
    proc = run("reid_tf.train", f"--workdir={workdir}", f"--data_dir={tmp_path / 'data'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stderr.splitlines()
    for fragment in ("finished run", "step 465", "test rank-1 42.2 %", os.path.join(workdir, "eval.md"),
                     "make tensorboard", "make demo WORKDIR=runs/demo2"):
        assert fragment in line, (fragment, line)


def test_an_unfinished_workdir_names_the_make_variables(tmp_path):
    from reid_tf import train
    from reid_tf.run_folder import finished_run
    from reid_tf.run_options import TrainOptions

    stopped = str(tmp_path / "stopped")  # model.json of an earlier finish, then resumed and interrupted
    fake_run(stopped, 400, 465, 450)
    assert finished_run(stopped) is None
    opts = TrainOptions(workdir=stopped)
    with pytest.raises(FileExistsError, match="--resume.*DEMO_FLAGS=--resume.*WORKDIR="):
        train._previous_settings(opts)
    budget = str(tmp_path / "budget")  # stopped by its time budget: finished, and --resume continues it
    fake_run(budget, 300, 465, 300, rank1=30.0)
    assert finished_run(budget) == {"step": 300, "total": 465, "rank1": 30.0,
                                    "report": os.path.join(budget, "eval.md")}


def test_next_steps_name_the_report_the_figures_and_a_ranking_command_that_exists():
    from reid_tf import train

    report, figures, ranking = train.next_steps("runs/demo", "runs/demo/eval.md")
    assert "runs/demo/eval.md" in report and "tensorboard --logdir runs/demo/tb" in figures
    command = ranking.split(": ", 1)[1].split(" writes ")[0].split()
    assert command[:3] == ["python", "-m", "reid_tf.evaluate"] and "runs/demo/visrank/index.html" in ranking
    proc = run(command[2], "--help")  # every flag it passes is one the command takes
    for arg in command[3:]:
        assert f"  {arg.split('=')[0]}:" in proc.stdout, arg


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
    (["--pairing=shared", "--recipe=shifted_copies", "--shared_images_per_camera=2"],
     ["shifted_copies", "K = 1", "--shared_images_per_camera=2"]),
    (["--recipe=shifted_copies", "--shared_images_per_camera=2"],  # shared by default with this recipe
     ["shifted_copies", "its default pairing", "--pairing=per_pair", "--shared_images_per_camera=2"]),
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


def test_a_workdir_of_an_older_version_is_refused_in_one_line_and_kept(tmp_path):
    """A run.json naming a recipe by a name this version no longer has (the renamed [31] recipe) is
    refused with one line naming the file and what to set, and the workdir is left as it was."""
    workdir = tmp_path / "old"
    workdir.mkdir()
    record = '{"dataset": "cuhk01", "model": "l23", "trial": 0, "seed": 0, "recipe": "paper_xcorr"}'
    (workdir / "run.json").write_text(record)
    proc = run("reid_tf.evaluate", f"--workdir={workdir}", f"--data_dir={tmp_path / 'data'}")
    assert_one_line_error(proc, str(workdir / "run.json"), "'paper_xcorr'", "shifted_copies", '"recipe"')
    assert os.listdir(workdir) == ["run.json"] and (workdir / "run.json").read_text() == record


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
    """Every os.replace of the project is fileio's (one helper, used everywhere)."""
    hits = []
    for top in ("reid_tf", "data_tools", "experiments", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(fixtures.REPO, top)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name)) as f:
                        if "os.replace(" in f.read():
                            hits.append(os.path.relpath(os.path.join(folder, name), fixtures.REPO))
    assert hits == [os.path.join("reid_tf", "fileio.py")]
