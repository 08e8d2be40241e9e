import pickle

import pytest
import torch

from omniseg.cli.main import main
from omniseg.errors import OmnisegError
from omniseg.models import create_model, load_pretrained
from omniseg.models.convert import (
    UNUSED_MODULES,
    convert_checkpoint,
    original_layout,
    to_original_state_dict,
    unused_state,
)
from tests.original_reference import reference_forward


def original_state(architecture: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the original key layout with random, non-trivial values everywhere."""
    torch.manual_seed(seed)
    state = to_original_state_dict(create_model(architecture))
    # GroupNorm affine params default to 1/0: randomise them too so the test sees them.
    return {
        k: v + 0.1 * torch.randn_like(v) if "gn" in k or ".0." in k else v for k, v in state.items()
    }


def test_original_layout_sizes():
    assert sum(torch.Size(s).numel() for s in original_layout("omniseg").values()) == 6_986_122
    assert sum(torch.Size(s).numel() for s in original_layout("omniseg-task").values()) == 6_033_238
    assert sum(v.numel() for v in unused_state().values()) == 76_416
    assert set(UNUSED_MODULES) == {"add_0", "add_1", "x1_resb_add0", "x1_resb_add1"}
    assert original_layout("omniseg")["controller_trilinear.weight"] == (162, 6144, 1, 1)
    assert original_layout("omniseg-task")["controller.weight"] == (162, 262, 1, 1)


@pytest.mark.parametrize("architecture", ["omniseg", "omniseg-task"])
def test_converted_checkpoint_matches_per_sample_reference(tmp_path, architecture):
    state = original_state(architecture)
    torch.save(state, tmp_path / "orig.pth")
    folder = convert_checkpoint(tmp_path / "orig.pth", tmp_path / "model")
    model = load_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == (
        sum(v.numel() for v in state.values()) - 76_416
    )
    x = torch.rand(3, 3, 32, 32)
    tasks, scales = [0, 3, 5], [1, 0, 3]
    with torch.no_grad():
        ours = model(x, tasks, scales)
        for i in range(3):
            ref = reference_forward(state, x[i : i + 1], tasks[i], scales[i])
            assert (ours[i : i + 1] - ref).abs().max().item() < 1e-5


def test_wrappers_and_module_prefix_are_accepted(tmp_path):
    state = original_state("omniseg-task", seed=3)
    wrapped = {
        "model": {f"module.{k}": v.half() for k, v in state.items()},
        "optimizer": {},
        "amp": {},
    }
    torch.save(wrapped, tmp_path / "fp16.pth")
    model = load_pretrained(convert_checkpoint(tmp_path / "fp16.pth", tmp_path / "m"))
    assert model.config.controller == "task"
    w = model.state_dict()["controller.linear.weight"]
    assert torch.allclose(w, state["controller.weight"][:, :, 0, 0].half().float())


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    state = original_state("omniseg")
    del state["add_1.0.conv1.weight"]
    state["bogus.weight"] = torch.zeros(1)
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(OmnisegError) as err:
        convert_checkpoint(tmp_path / "bad.pth", tmp_path / "m")
    msg = str(err.value)
    assert (
        "add_1.0.conv1.weight" in msg and "bogus.weight" in msg and "layer2.0.conv1.weight" in msg
    )
    assert not (tmp_path / "m").exists()


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"conv1.weight": _Exploit()}, fh)
    code = main(["convert-checkpoint", str(path), str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert "pwned" not in captured.out
    assert "refused" in captured.err and str(path) in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_cli_convert_round_trip(tmp_path):
    torch.save(original_state("omniseg"), tmp_path / "o.pth")
    assert main(["convert-checkpoint", str(tmp_path / "o.pth"), str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    # refuses to clobber
    assert main(["convert-checkpoint", str(tmp_path / "o.pth"), str(tmp_path / "m")]) == 2
