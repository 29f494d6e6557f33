"""Every script in scripts/ runs in its quick mode (``--quick``: one round on a few hundred
MNIST images, seconds), so that none of them rots unseen: each test runs one in a subprocess and
checks its exit status and figures or lines of its output.  Scripts that need a GPU run on the
CuPy stand-in (tests/standin) where they can, and say they skip, with status 0, where they
cannot; scripts/gpu-wheels, which needs the package index, prints what it would download.
scripts/hostile.py has tests of its own (tests/test_hostile.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dnn.backends.gpu import GpuBackend
from tests.cuda_harness import HostCudaBackend
from tests.test_distributed import needs_mpi

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
TESTED_ELSEWHERE = {"hostile.py"}
TESTED_HERE = {"bench.py", "bench_convnet.py", "bench_distributed.py", "bench_gpu.py",
               "bench_resnet.py", "bench_revisions.py", "bench_text.py", "convnet_vs_torch.py",
               "profile_step.py", "gpu-check", "gpu-wheels"}
# A quick run checks that a script works, not how fast: one BLAS thread, since two on a
# 2-core machine that is busy with something else can take thirty times as long.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

needs_bash = pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
without_a_gpu = pytest.mark.skipif(bool(GpuBackend.is_available()),
                                   reason="the gpu backend runs here: the script would run "
                                          "(and gpu-check install) for real")


@pytest.fixture
def data_dir(mnist_dir) -> Path:
    """The real MNIST folder, absolute (the scripts run from the repository's root); the test
    is skipped without it."""
    return mnist_dir.resolve()


def run_script(name: str, *args, environment: dict | None = None,
               timeout: int = 60) -> subprocess.CompletedProcess:
    """``scripts/name args`` run from the repository's root, with one BLAS thread and
    ``environment`` added; a bash script through bash, the others through this Python."""
    script = SCRIPTS / name
    command = ["bash", str(script)] if script.suffix != ".py" else [sys.executable, str(script)]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT,
                          env={**os.environ, **ONE_THREAD, **(environment or {})})


def figures(pattern: str, text: str) -> list[float]:
    """The numbers the one group of ``pattern`` matches in ``text``, at least one."""
    found = [float(value) for value in re.findall(pattern, text, re.M)]
    assert found, f"no match for {pattern!r} in:\n{text}"
    return found


def assert_ran(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_has_a_quick_mode_run_here():
    scripts = {path.name for path in SCRIPTS.iterdir() if path.is_file()}
    assert scripts - TESTED_ELSEWHERE == TESTED_HERE
    for name in TESTED_HERE:
        assert "--quick" in (SCRIPTS / name).read_text(), name


def test_bench_times_every_system_and_the_memory_of_dnn_train(data_dir, tmp_path):
    result = run_script("bench.py", "--quick", "--no-torch", "--data-dir", data_dir,
                        "--json", tmp_path / "bench.json")
    assert_ran(result)
    assert figures(r"^\s+dnn epoch: median (\S+) s", result.stdout)[0] > 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["rounds"] == 1 and record["quick"] is True
    assert {"dnn", "floor", "floor+update", "floor-nonzero"} <= set(record["epoch_seconds"])
    assert all(stats["median"] > 0 for stats in record["epoch_seconds"].values())
    assert {"dnn/floor", "dnn/floor+update", "dnn/floor-nonzero"} <= set(record["ratios"])
    assert all(stats["median"] > 0 for stats in record["ratios"].values())
    assert len(record["by_round"]["cross_core_penalty"]) == 1
    assert record["peak_rss_mib_dnn_train"] > 0
    assert record["machine"]["cores"] == os.cpu_count()


def test_profile_step_times_each_phase_and_the_update_alone(data_dir):
    result = run_script("profile_step.py", "--quick", "--data-dir", data_dir)
    assert_ran(result)
    phases = re.findall(r"^\s*([a-z][a-z 0-9]*): +(\S+) ms/epoch$", result.stdout, re.M)
    assert [phase for phase, _ in phases] == ["gather", "forward 1", "forward 2", "loss",
                                              "backward 2", "backward 1", "update", "accuracy"]
    assert all(float(milliseconds) >= 0 for _, milliseconds in phases)
    assert figures(r"^\s+total: +(\S+) ms/epoch \(floor", result.stdout)[0] > 0
    nanoseconds = figures(r"^RMSprop update, .*: (\S+) ns/element$", result.stdout)
    assert len(nanoseconds) == 4 and min(nanoseconds) > 0


def test_bench_revisions_builds_a_revision_apart_and_cleans_up(data_dir, tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout with a commit")
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"],
                               capture_output=True, text=True).stdout
    result = run_script("bench_revisions.py", "HEAD", "HEAD", "--quick", "--data-dir",
                        data_dir, environment={"TMPDIR": str(tmp_path)})
    assert_ran(result)
    assert figures(r"^HEAD: median (\S+) s/epoch", result.stdout)[0] > 0
    assert figures(r"^HEAD / HEAD: median per-round ratio (\S+)", result.stdout) == [1.0]
    assert list(tmp_path.iterdir()) == []  # the exported revision is gone
    assert subprocess.run(["git", "-C", str(ROOT), "worktree", "list"],
                          capture_output=True, text=True).stdout == worktrees


def test_bench_revisions_compares_two_revisions_unless_quick(tmp_path):
    result = run_script("bench_revisions.py", "HEAD", "HEAD", "--data-dir", tmp_path)
    assert result.returncode == 2
    assert "BEFORE and AFTER are the same revision" in result.stderr


@pytest.mark.skipif(not HostCudaBackend.is_available(),
                    reason=f"stand-in: {HostCudaBackend.is_available().reason}")
@pytest.mark.skipif(sys.platform != "linux", reason="stand-in: the stub cuBLAS is built, and "
                                                    "looked for, as on Linux")
def test_bench_gpu_runs_on_the_standin(data_dir, tmp_path):
    from tests.standin import stub_cublas
    from tests.test_gpu_standin import STANDIN, WHEEL_13, fake_pathfinder

    site = tmp_path / "site"
    stub_cublas.build(site, 13)
    pathfinder = fake_pathfinder(tmp_path / "pathfinder", names=site / WHEEL_13)
    path = os.pathsep.join(map(str, [STANDIN, pathfinder, site, ROOT]))
    result = run_script("bench_gpu.py", "--quick", "--data-dir", data_dir, "--json",
                        tmp_path / "gpu.json", environment={"PYTHONPATH": path})
    assert_ran(result)
    assert "GraphFallbackWarning" not in result.stderr
    seconds = figures(r"^seed\s+dnn .* (\S+) s/epoch", result.stdout)
    assert len(seconds) == 3 and min(seconds) > 0
    seconds = figures(r"^convnet dnn .* (\S+) s/epoch", result.stdout)
    assert len(seconds) == 2 and min(seconds) > 0
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["device"] == "none: the CuPy stand-in of tests/standin"
    runs = record["runs"]["seed"]
    assert {"dnn graph one-hot", "dnn graph integer", "dnn eager one-hot"} <= set(runs)
    assert all(0 < run["test_accuracy"] <= 1 and len(run["epochs_s"]) == 2
               for run in runs.values())
    # Keras' convnet, on a few images in small batches (the stand-in multiplies slowly)
    assert record["networks"]["convnet"] == {"batch": 16, "training_images": 72,
                                             "test_images": 72}
    runs = record["runs"]["convnet"]
    assert {"dnn graph one-hot", "dnn eager one-hot"} <= set(runs)
    for run in runs.values():
        assert run["median_epoch_s"] > 0 and len(run["epochs_s"]) == 2
        assert min(run["epochs_s"]) > 0 and 0 <= run["test_accuracy"] <= 1
    ratios = {"dnn graph / torch eager", "dnn graph / torch graph"}
    assert set(record["ratios"]["convnet"]) == (ratios if "torch eager" in runs else set())
    assert set(record["targets"]["convnet"]) == ratios


def test_bench_gpu_pytorch_convnet_runs_eagerly_on_the_cpu(monkeypatch):
    """PyTorch's runs in bench_gpu.py need CUDA, which CI lacks: their eager paths (both
    memory formats of the convnet, and a dense network) run here on the CPU instead, on a few
    random images, so that a GPU session does not find them broken."""
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(SCRIPTS))
    names = ("bench", "bench_convnet", "bench_gpu")
    loaded = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    try:
        import bench_gpu
        import numpy as np
        import torch

        monkeypatch.setattr(bench_gpu, "TORCH_DEVICE", "cpu")
        rng = np.random.default_rng(0)
        data = tuple((rng.random((rows, 784), dtype=np.float32), rng.integers(0, 10, rows))
                     for rows in (40, 24))
        chosen = bench_gpu.torch_convnet_format(data[0][0], 16, 1)
        assert chosen["memory_format"] in {"channels-last", "NCHW"}
        assert min(chosen["warmup_step_ms"].values()) > 0
        for memory_format in (torch.channels_last, torch.contiguous_format):
            run = bench_gpu.torch_run(data, "convnet", 16, 2, False, memory_format)
            assert run["median_epoch_s"] > 0 and len(run["epochs_s"]) == 2
            assert 0 <= run["test_accuracy"] <= 1
        run = bench_gpu.torch_run(data, "seed", 16, 2, False)
        assert run["median_epoch_s"] > 0 and 0 <= run["test_accuracy"] <= 1
        runs = {"dnn graph one-hot": {"median_epoch_s": 1.0},
                "torch eager": {"median_epoch_s": 4.0}, "torch graph": {"median_epoch_s": 0.5}}
        assert bench_gpu.ratios_of(runs) == {"dnn graph / torch eager": 0.25,
                                             "dnn graph / torch graph": 2.0}
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(loaded)


@needs_mpi
def test_bench_distributed_times_one_and_two_ranks_and_models_more(data_dir, tmp_path):
    result = run_script("bench_distributed.py", "--quick", "--data-dir", data_dir, "--json",
                        tmp_path / "distributed.json", timeout=120)
    assert_ran(result)
    record = json.loads((tmp_path / "distributed.json").read_text())
    assert [run["ranks"] for run in record["runs"]][:2] == [1, 2] and record["quick"] is True
    assert all(run[network]["step_s"] > 0 for run in record["runs"]
               for network in ("seed", "wide"))
    assert record["runs"][1]["wide"]["parameters"] == 784 * 5120 + 5120 + 5120 * 10 + 10
    assert set(record["model"]["ranks"]) == {"8", "64", "512"}
    shares = figures(r"^\s+512 ranks: seed all-reduce \S+ ms = (\d+)% of a step", result.stdout)
    assert 0 <= shares[0] <= 100


@without_a_gpu
def test_bench_gpu_without_a_gpu_says_it_skips():
    result = run_script("bench_gpu.py", "--quick")
    assert_ran(result)
    assert result.stderr.startswith("bench_gpu: skipped: gpu backend unavailable: ")
    assert result.stdout == ""
    result = run_script("bench_gpu.py")
    assert result.returncode == 1
    assert result.stderr.startswith("bench_gpu: gpu backend unavailable: ")


@needs_bash
@without_a_gpu
def test_gpu_check_without_a_gpu_says_it_skips():
    result = run_script("gpu-check", "--quick", environment={"PYTHON": sys.executable})
    assert_ran(result)
    assert result.stderr.startswith("gpu-check: skipped (--quick): gpu backend unavailable: ")
    assert result.stdout == ""  # no stage ran, nothing was installed


@needs_bash
def test_gpu_wheels_prints_what_it_would_download(tmp_path):
    folder = tmp_path / "wheels"
    result = run_script("gpu-wheels", "--quick", folder, environment={"PYTHON": sys.executable})
    assert_ran(result)
    assert result.stdout == (f"gpu-wheels: --quick: would run: '{sys.executable}' '-m' 'pip' "
                             f"'download' '--only-binary=:all:' '--dest' '{folder}' 'click' "
                             "'pytest' 'platformdirs' 'setuptools>=77'\n")
    assert not folder.exists()


def test_convnet_vs_torch_follows_pytorch_for_40_steps_where_it_is_installed(tmp_path):
    """The full comparison where PyTorch is installed (a benchmark machine); else the quick
    mode says there is nothing to compare with."""
    if importlib.util.find_spec("torch") is None:
        result = run_script("convnet_vs_torch.py", "--quick")
        assert_ran(result)
        assert result.stdout.startswith("PyTorch is not installed")
        return
    result = run_script("convnet_vs_torch.py", "--json", tmp_path / "torch.json", timeout=300)
    assert_ran(result)
    networks = json.loads((tmp_path / "torch.json").read_text())["networks"]
    assert set(networks) == {"convnet", "convnet-bn", "resnet"}
    for figures_of in networks.values():
        assert figures_of["steps"] == 40
        assert figures_of["max_relative_loss_difference"] < 1e-5
        assert figures_of["max_relative_weight_difference"] < 1e-5
        assert figures_of["loss_last"] < figures_of["loss_first"]  # it learned something


@pytest.mark.parametrize("script, batch", [("bench_resnet.py", 64), ("bench_text.py", 32)])
def test_the_model_benchmarks_time_dnn_next_to_torch_where_it_is_installed(tmp_path, script,
                                                                          batch):
    result = run_script(script, "--quick", "--json", tmp_path / "figures.json")
    assert_ran(result)
    record = json.loads((tmp_path / "figures.json").read_text())
    assert record["rounds"] == 1 and record["quick"] is True and record["batch"] == batch
    assert record["step_ms"]["dnn"]["median"] > 0
    assert figures(r"^\s+dnn step: median +(\S+) ms", result.stdout)[0] > 0
    if importlib.util.find_spec("torch") is None:
        assert "PyTorch is not installed" in result.stdout and "torch" not in record["step_ms"]
    else:
        assert record["dnn_over_torch"]["median"] > 0


@pytest.mark.parametrize("option", ["--rounds", "--steps"])
def test_the_model_benchmarks_take_positive_counts_alone(option):
    result = run_script("bench_text.py", option, "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {option}: must be a positive integer, not '0'" in result.stderr


def test_bench_convnet_times_dnn_next_to_torch_and_the_floor(tmp_path):
    result = run_script("bench_convnet.py", "--quick", "--json", tmp_path / "convnet.json")
    assert_ran(result)
    assert figures(r"^\s+dnn step: median +(\S+) ms", result.stdout)[0] > 0
    record = json.loads((tmp_path / "convnet.json").read_text())
    assert record["rounds"] == 1 and record["quick"] is True
    assert {"dnn", "floor"} <= set(record["step_ms"])
    assert all(stats["median"] > 0 for stats in record["step_ms"].values())
    assert record["dnn_gflops"] > 0 and record["matmul_gflops"] > 0
    assert record["peak_rss_mib_epoch"] > 0
