"""Packaging and `./run`: one list of pinned dependencies (pyproject.toml), the TensorFlow build
chosen by `nvidia-smi`, usage on bad commands, relative paths that mean the caller's folder,
shipped flagfiles found by name, and (slow) a wheel installed and run outside the repo."""

import importlib.metadata
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO_ROOT
from vdim_tf import launch

RUN = str(REPO_ROOT / "run")
TIMEOUT = 180


def _pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _pins(requirements):
    """{name: version} of `name[extras]==version` strings."""
    out = {}
    for req in requirements:
        name, version = req.split("==")
        out[name.split("[")[0]] = version
    return out


def test_tensorflow_is_declared_once_as_a_cpu_or_gpu_extra_of_the_same_version():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    assert not any(r.startswith("tensorflow") for r in project["dependencies"]), "TensorFlow belongs in an extra"
    assert extras["cpu"] == [f"tensorflow-cpu=={_pins(extras['cpu'])['tensorflow-cpu']}"]
    assert extras["gpu"] == [f"tensorflow[and-cuda]=={_pins(extras['cpu'])['tensorflow-cpu']}"]
    assert not (REPO_ROOT / "requirements.txt").exists(), "a second list of dependencies"


def test_the_environment_running_the_tests_has_the_pinned_versions():
    project = _pyproject()["project"]
    try:  # ./run installs the cpu extra, or the gpu one where nvidia-smi lists a GPU
        importlib.metadata.version("tensorflow-cpu")
        extra = "cpu"
    except importlib.metadata.PackageNotFoundError:
        extra = "gpu"
    pins = _pins(project["dependencies"] + project["optional-dependencies"][extra]
                 + project["optional-dependencies"]["test"])
    installed = {name: importlib.metadata.version(name) for name in pins}
    assert installed == pins


def _run(*args, cwd=REPO_ROOT, path=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([RUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"]])
def test_run_help_prints_the_usage(args):
    out = _run(*args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ./run")
    assert "pretrain" in out.stdout and "finetune" in out.stdout


@pytest.mark.parametrize("command", ["--bogus", "pretrian", "flags", "../launch/pretrain"])
def test_run_with_an_unknown_command_prints_the_usage_and_exits_2(command):
    out = _run(command)
    assert out.returncode == 2
    assert f"unknown command '{command}'" in out.stderr and "usage: ./run" in out.stderr
    assert "No module named" not in out.stderr


def _stand_in_nvidia_smi(folder, output, status):
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    script.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


@pytest.mark.parametrize("output, status, extra", [
    ("GPU 0: NVIDIA H200 (UUID: GPU-0f3c1a2b)", 0, "gpu"),
    ("No devices were found", 6, "cpu"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", 9, "cpu"),
])
def test_run_picks_the_tensorflow_build_from_what_nvidia_smi_lists(tmp_path, output, status, extra):
    out = _run("tensorflow-extra", path=_stand_in_nvidia_smi(tmp_path / "bin", output, status))
    assert (out.returncode, out.stdout.strip()) == (0, extra), out.stderr


def test_run_picks_the_cpu_build_without_nvidia_smi(tmp_path):
    (tmp_path / "bin").mkdir()
    out = _run("tensorflow-extra", path=f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert (out.returncode, out.stdout.strip()) == (0, "cpu"), out.stderr


def test_run_installs_the_chosen_extra_from_pyproject():
    """The install line of ./run names pyproject's extras, so the choice above is what gets installed."""
    script = pathlib.Path(RUN).read_text()
    extras = _pyproject()["project"]["optional-dependencies"]
    assert '-e "$REPO[$extra,test]"' in script
    assert {"cpu", "gpu", "test"} <= set(extras)


def test_a_relative_flagfile_means_the_callers_folder(tmp_path):
    (tmp_path / "mine.cfg").write_text("--encoder=cpu\n--model_dir=run_here\n--train_steps=0\n")
    out = _run("pretrain", "--flagfile=mine.cfg", cwd=tmp_path)
    # Read from tmp_path: the run stops at the file's own (invalid) train_steps, not at a missing file.
    assert out.returncode == 1
    assert "pretrain: error: train_steps=0" in out.stderr, out.stderr


def test_a_shipped_flagfile_is_found_by_name_from_any_folder(tmp_path):
    out = _run("pretrain", "--flagfile=demo_pretrain.cfg", "--train_steps=0", cwd=tmp_path)
    assert out.returncode == 1
    assert "pretrain: error: train_steps=0" in out.stderr, out.stderr


def test_a_missing_flagfile_names_the_absolute_path_and_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no such file {tmp_path}/nope.cfg.*demo_pretrain.cfg"):
        launch.expand_flagfiles(["--flagfile=nope.cfg"])


def test_nested_shipped_flagfiles_expand_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = launch.expand_flagfiles(["--flagfile=ucf101_pretrain_lab.cfg", "--train_steps=3"])
    base = launch.expand_flagfiles(["--flagfile=configs/ucf101_pretrain.cfg"])
    assert lines[:len(base)] == base  # the nested `--flagfile=configs/ucf101_pretrain.cfg`, inlined
    assert "--color_mode=lab" in lines and lines[-1] == "--train_steps=3"
    assert not any(line.startswith(("#", "--flagfile")) for line in lines)


def test_a_flagfile_in_the_callers_folder_wins_over_a_shipped_one_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_pretrain.cfg").write_text("# mine\n--batch_size=3\n")
    assert launch.expand_flagfiles(["--flagfile=demo_pretrain.cfg"]) == ["--batch_size=3"]


def test_a_flagfile_that_includes_itself_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop.cfg").write_text("--flagfile=loop.cfg\n")
    with pytest.raises(ValueError, match="includes itself"):
        launch.expand_flagfiles(["--flagfile=loop.cfg"])


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repo(tmp_path, tiny_synthetic):
    """Builds the wheel, installs it into a fresh venv in tmp_path and runs a console script and
    the library from there.

    The venv gets the wheel alone (`--no-deps`; `--ignore-installed` because an editable vdim_tf
    of the test's environment is visible too); its dependencies come from the environment running
    this test, made visible by one `.pth` line (an offline install of TensorFlow would need a 600 MB
    wheelhouse). `pip check` then proves those installed versions satisfy the wheel's pins, and the
    imports prove vdim_tf itself comes from the wheel, not from the repo.
    """
    import site
    import sysconfig

    dist, venv = tmp_path / "dist", tmp_path / "venv"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO_ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = dist.glob("vdim_tf-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    pathlib.Path(purelib, "deps_from_test_env.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    installed = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(*args):
        out = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return out

    helped = subprocess.run([venv / "bin" / "vdim-pretrain", "--help"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert helped.returncode in (0, 1) and "Pretrain VDIM." in helped.stdout, helped.stdout + helped.stderr  # absl's --help exits 1
    run(str(venv / "bin" / "vdim-pretrain"), "--flagfile=demo_pretrain.cfg", "--model_dir=run", "--train_steps=2",
        f"--train_data={tiny_synthetic / 'train' / '*.tfrecord'}", "--batch_size=4", "--checkpoint_every=2",
        "--log_every=1", "--warmup_steps=1")
    assert (work / "run" / "checkpoints").is_dir()  # the relative --model_dir is the caller's folder
    out = run(str(python), "-c", "import vdim_tf; print(vdim_tf.__file__); "
              "print(vdim_tf.load_encoder('run')(vdim_tf.load_preprocess('run')(__import__('numpy').zeros("
              "(1, 16, 64, 64, 3), 'uint8'))).shape)")
    module, shape = out.stdout.strip().splitlines()[-2:]
    assert module.startswith(str(venv)), module
    assert shape == "(1, 128)"
