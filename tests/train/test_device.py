"""Choosing the training device (`resolve_device`, `--device`): the CPU here; CUDA choices are checked
against what torch reports (mocked, since these machines have no GPU)."""

from __future__ import annotations

import pytest
import torch

from blt.cli import main
from blt.errors import BLTError
from blt.model.byte_latent import ByteLatentTransformer
from blt.patching.patcher import Patcher
from blt.train import Trainer, resolve_device
from blt.train.device import Bf16Probe, probe_bf16, slow_bf16_warning
from blt.train.objectives import BLTObjective
from tests.train.conftest import micro_blt_config, micro_train_config


@pytest.fixture
def fake_gpus(monkeypatch):
    """torch reports two CUDA GPUs; records which one is made current."""
    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(BLTError, match="sees no CUDA GPU; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(BLTError, match="device must be auto, cpu, cuda or cuda:N, not 'gpu'"):
        resolve_device("gpu")


def test_cuda_takes_the_local_rank_under_torchrun(fake_gpus, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit index wins
    assert fake_gpus[:3] == [0, 1, 0]
    with pytest.raises(BLTError, match="there is no GPU 2 \\(torch sees 2\\)"):
        resolve_device("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun, every process would take the same GPU
    with pytest.raises(BLTError, match="each process takes GPU LOCAL_RANK; pass --device cuda"):
        resolve_device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda", 1)


def test_training_commands_refuse_a_missing_gpu_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (["train"], ["train-entropy"], ["train-baseline", "--kind", "byte"]):
        assert main([*command, "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_eval_generate_and_finetune_take_a_device(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (["eval"], ["generate", "--prompt", "x"], ["finetune", "--out", str(tmp_path / "tuned")]):
        assert main([*command, str(tmp_path), "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err


def test_training_rows_must_fit_the_models_max_seq_len(text_data, tmp_path, capsys):
    for command in (["train", "--patching", "byte"], ["train-entropy"]):
        assert main([*command, "--data", str(text_data.path), "--out", str(tmp_path / "run"), "--set", "train.seq_len=1024",
                     "--device", "cpu"]) == 2
        message = "train.seq_len 1024 is longer than the model's max_seq_len 512; raise it with --set max_seq_len=1024"
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_probe_bf16_measures_both_precisions_once_per_device():
    probe = probe_bf16("cpu")
    assert probe.device == "cpu" and probe.fp32_flops_per_s > 0 and probe.bf16_flops_per_s > 0
    assert probe.speedup == pytest.approx(probe.bf16_flops_per_s / probe.fp32_flops_per_s)
    assert probe_bf16("cpu") is probe  # cached: training, eval and `blt bench` pay for it once


@pytest.mark.parametrize("speedup, slow", [(1 / 50, True), (0.49, True), (0.5, False), (2.4, False)])
def test_bf16_is_slow_under_half_the_fp32_speed(speedup, slow):
    assert Bf16Probe("cpu", 60e9, 60e9 * speedup).slow is slow


def test_slow_bf16_warning_only_for_bf16_where_it_is_emulated(monkeypatch):
    probes = {"slow": Bf16Probe("cpu", 64e9, 1.25e9), "fast": Bf16Probe("cpu", 64e9, 150e9)}
    chosen = ["slow"]
    monkeypatch.setattr("blt.train.device.probe_bf16", lambda device: probes[chosen[0]])
    warning = slow_bf16_warning("cpu", "bf16")
    assert warning.startswith("warning: bf16 matmuls run at 1.2 GFLOP/s on this cpu against 64.0 in fp32")
    assert "no native bf16" in warning and "--precision fp32" in warning and "\n" not in warning
    assert slow_bf16_warning(torch.device("cpu"), "fp32") is None
    chosen[0] = "fast"
    assert slow_bf16_warning("cpu", "bf16") is None


def test_training_in_emulated_bf16_says_so_once(monkeypatch, text_data, tmp_path):
    monkeypatch.setattr("blt.train.device.probe_bf16", lambda device: Bf16Probe("cpu", 64e9, 1.25e9))
    cfg = micro_blt_config()
    objective = BLTObjective(ByteLatentTransformer(cfg).init_weights(seed=0), Patcher(cfg.patching))
    for precision, expected in (("bf16", 1), ("fp32", 0)):
        lines: list[str] = []
        Trainer(objective, text_data, micro_train_config(precision=precision, steps=1), tmp_path / precision,
                progress=False, log=lines.append)
        assert sum("no native bf16" in line for line in lines) == expected
