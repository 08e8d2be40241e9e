"""What the user reads: one line per error, folders named as folders, Ctrl-C says how to resume,
--debug anywhere, no advice to unpickle, honest training defaults."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from omniseg.cli.main import interrupted_message, main

REPO = Path(__file__).resolve().parents[1]


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_segment_errors_are_one_line_each(tmp_path, capsys):
    from omniseg.models import create_model, save_pretrained

    weights = tmp_path / "m"
    save_pretrained(create_model("omniseg-tiny"), weights)
    missing = tmp_path / "nope.svs"
    args = ["segment", str(missing), "-o", str(tmp_path / "out"), "--weights", str(weights)]
    assert main(args) == 2
    lines = _error_lines(capsys)
    assert lines == [f"omniseg: error: {missing}: no such file; check the slide path"]
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    assert main([*args[:1], str(empty), *args[2:]]) == 2
    (line,) = _error_lines(capsys)
    assert "is a folder" in line and line.count(str(empty)) == 1
    assert main([*args[:1], str(empty), str(missing), *args[2:]]) == 2
    lines = _error_lines(capsys)  # a missing slide stops the run before any slide is read
    assert lines == [f"omniseg: error: {missing}: no such file; check the slide path"]
    unreadable = tmp_path / "bad.svs"
    unreadable.write_bytes(b"junk")
    assert main([*args[:1], str(unreadable), str(empty), *args[2:]]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 3 and lines[-1].endswith("2 of 2 slides failed: bad.svs, empty-folder")


def test_a_folder_of_slides_segments_the_slides_inside(tmp_path):
    from omniseg.io.opener import expand_slide_paths

    folder = tmp_path / "cohort"
    folder.mkdir()
    for name in ("b.svs", "a.tiff", "notes.txt", ".hidden.svs"):
        (folder / name).write_bytes(b"")
    (folder / "sub.svs").mkdir()
    single = tmp_path / "x.ndpi"
    single.write_bytes(b"")
    assert expand_slide_paths([folder, single]) == [folder / "a.tiff", folder / "b.svs", single]


def test_a_flag_value_taken_as_a_slide_fails_before_any_work(tmp_path, capsys):
    """``--resume true``: typer reads ``true`` as a second slide; say so before the first runs."""
    slide = tmp_path / "s.tif"
    slide.write_bytes(b"not read")
    out = tmp_path / "out"
    assert main(["segment", str(slide), "-o", str(out), "--resume", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "true: no such file" in err and "take no value" in err
    assert not out.exists()


def test_ctrl_c_says_what_was_kept_and_how_to_continue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["omniseg"])
    (tmp_path / "s.svs").write_bytes(b"")
    message = interrupted_message(["segment", "s.svs", "-o", "out dir"])
    assert "kept in out dir/s/.work;" in message  # the real folder, not OUT/<slide>
    assert message.splitlines()[-1].strip() == "omniseg segment s.svs -o 'out dir' --resume"
    # a stopped --overwrite kept the OLD result: --resume would keep it (issue 36 point 9)
    again = interrupted_message(["segment", "s.svs", "-o", "out dir", "--overwrite"])
    assert "old result is untouched" in again and "--resume" not in again
    assert again.splitlines()[-1].strip() == "omniseg segment s.svs -o 'out dir' --overwrite"
    train = interrupted_message(["train", "--data", "d", "--out", "r", "--resume"])
    assert "saved in r/last;" in train
    assert train.splitlines()[-1].strip() == "omniseg train --data d --out r --resume"
    assert interrupted_message(["info"]) == "omniseg: interrupted"
    # run as .venv/bin/omniseg (not on PATH): the hint must paste as it was typed
    monkeypatch.setattr("sys.argv", [".venv/bin/omniseg"])
    hint = interrupted_message(["demo", "-o", "demo-out"]).splitlines()[-1].strip()
    assert hint == ".venv/bin/omniseg demo -o demo-out --resume"
    monkeypatch.setattr("sys.argv", ["/x/omniseg/__main__.py"])
    assert (
        interrupted_message(["train", "--out", "r"])
        .splitlines()[-1]
        .strip()
        .startswith("python -m omniseg train")
    )


def test_debug_is_accepted_after_the_subcommand(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert main(["convert-checkpoint", str(missing), str(tmp_path / "o"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "No such option" not in err


def test_demo_accepts_the_resume_its_messages_suggest(capsys):
    with pytest.raises(SystemExit) as stop:
        from omniseg.cli.app import app

        app(["demo", "--help"], prog_name="omniseg")
    assert stop.value.code == 0 and "--resume" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["junk", "pickle"])
def test_convert_checkpoint_never_advises_unpickling(tmp_path, capsys, content):
    bad = tmp_path / "bad.pth"
    if content == "junk":
        bad.write_text("not a checkpoint")
    else:
        bad.write_bytes(pickle.dumps({"w": object()}))
    assert main(["convert-checkpoint", str(bad), str(tmp_path / "o")]) == 2
    (line,) = _error_lines(capsys)
    assert str(bad) in line and "weights_only" not in line and "internal error" not in line


def test_semi_supervised_terms_are_off_by_default():
    from omniseg.training.config import SemiConfig, TrainConfig

    assert SemiConfig().enabled is False and TrainConfig().semi.enabled is False


@pytest.mark.parametrize(
    "config", sorted((REPO / "src" / "omniseg" / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_configs_hold_no_machine_paths_and_load(config):
    from omniseg.training import load_train_config

    raw = yaml.safe_load(config.read_text())
    assert not raw.get("data", {}).get("path"), "configs hold no machine paths; --data does"
    resolved = load_train_config(config, {"data.path": "some/data", "run.out": "r"})
    assert resolved.data.path == "some/data"


@pytest.mark.parametrize("flag", ["--max-steps", "--epochs"])
def test_a_zero_step_budget_is_rejected(tmp_path, capsys, flag):
    args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), flag, "0"]
    assert main(args) == 2
    (line,) = _error_lines(capsys)
    assert f"{flag} must be >= 1" in line
    assert not (tmp_path / "r").exists()


def test_hd95_is_stated_in_one_unit_everywhere():
    """``evaluate`` prints HD95 in µm; the docs must not report it in px."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            if "HD95" in line:
                assert "HD95 px" not in line and "HD95 in px" not in line, f"{doc.name}: {line}"


def test_segment_refuses_emulated_bf16_like_evaluate(tmp_path):
    """Without native bf16 kernels segment used to take the ~5x slower emulated path silently."""
    import torch

    from omniseg.errors import OmnisegError
    from omniseg.inference.loading import load_segment_model
    from omniseg.models import create_model, save_pretrained

    save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    from omniseg.runtime import native_bf16

    if native_bf16(torch.device("cpu")):
        model, _ = load_segment_model(tmp_path / "m", "cpu", "bf16")
        assert model is not None
    else:
        with pytest.raises(OmnisegError, match="no native bf16"):
            load_segment_model(tmp_path / "m", "cpu", "bf16")


@pytest.mark.parametrize("command", ["segment", "demo", "train", "evaluate", "extract", "finetune"])
def test_quiet_and_no_progress_mean_the_same_on_every_command(command):
    import typer

    from omniseg.cli.app import app

    click_command = typer.main.get_command(app).commands[command]
    flags = [set(p.opts) for p in click_command.params]
    assert {"--quiet", "--no-progress"} in flags, (command, flags)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["segment", "--bogus"], "No such option: --bogus"),
        (["segment", "x.tif"], "Missing option '-o' / '--out'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["train", "--out", "r", "--max-steps", "abc"], "Invalid value for '--max-steps'"),
        (["train", "--out", "r", "--ema-decay", "0.9"], "--set run.ema_decay=VALUE"),
        (["train", "--out", "r", "--no-semi"], "--set semi.enabled=false"),
    ],
)
def test_usage_errors_are_one_line_with_the_fix(args, says, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("omniseg: error: ") and says in err
    assert err.endswith("--help)") and "╭" not in err


def test_train_has_a_few_flags_and_every_other_setting_is_set():
    """Issue 35: train keeps its common flags; what it dropped is one --set away."""
    import typer

    from omniseg.cli.app import app
    from omniseg.cli.train_cmd import SET_INSTEAD
    from omniseg.training.config import TrainConfig

    flags = {o for p in typer.main.get_command(app).commands["train"].params for o in p.opts}
    assert len(flags) <= 26 and not flags & set(SET_INSTEAD)
    plain = TrainConfig().to_dict()
    for key in SET_INSTEAD.values():  # every hint names a real config key
        section, name = key.split("=")[0].split(".")
        assert name in plain[section], key


def test_the_next_step_segment_prints_runs_when_pasted(tmp_path, capsys, monkeypatch):
    """Issue 37: segment -> (QuPath) -> extract -> train by pasting what omniseg printed. The
    extract line segment prints runs as printed (its own GeoJSON's 'glomerulus' maps to the
    capsule task), and train's last line names a runnable segment command."""
    import shlex

    from omniseg.data.synthetic import synthetic_tissue, write_tiff
    from omniseg.models import create_model, save_pretrained

    monkeypatch.chdir(tmp_path)
    save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    write_tiff(tmp_path / "s.tif", synthetic_tissue(160, 224), 0.25)
    assert main(["segment", "s.tif", "-o", "out", "--weights", "m", "--quiet",
                 "--tissue-margin", "-1"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    line = next(x for x in said.splitlines() if x.startswith("to teach it your lab"))
    printed = shlex.split(line.split(" then ", 1)[1].replace("PATCHES", "patches"))
    start = printed.index("extract")  # after the program as invoked (omniseg, python -m omniseg)
    assert printed[start - 1].endswith("omniseg")
    code = main(printed[start:])
    out = capsys.readouterr()
    if code != 0:  # a random tiny model may find no objects at all: nothing to cut is said so
        assert "no objects" in out.err or "no patches" in out.err, out.err
        return
    assert (tmp_path / "patches" / "manifest.csv").is_file()
    train_line = next(x for x in out.out.splitlines() if "train with:" in x)
    assert "--val-split none" in train_line


def test_a_full_disk_names_the_output_folder_when_the_error_names_no_file():
    """Issue 36 point 11: extract on a full disk said 'an output' instead of its folder."""
    import errno

    from omniseg.cli.main import disk_full_message

    full = OSError(errno.ENOSPC, "No space left on device")
    said = disk_full_message(full, ["extract", "s.tif", "--annotations", "a.geojson", "-o", "pat"])
    assert said.startswith("omniseg: error: pat: the disk is full")
    named = OSError(errno.ENOSPC, "No space left on device", "pat/x.png")
    assert "pat/x.png: the disk is full" in disk_full_message(named, ["extract", "-o", "pat"])


def test_the_extract_hint_carries_a_pixel_size_the_user_gave(tmp_path, capsys):
    """The demo's JPEG tiles have no pixel size in their files: segment ran them at --mpp 0.5,
    so the extract line it prints must say so, or pasting it fails."""
    from omniseg.cli.segment_cmd import _report
    from omniseg.inference.pipeline import SlideResult

    summary = {"mpp": 0.5, "mpp_source": "override", "classes": {}}
    _report([SlideResult(tmp_path / "t.jpg", tmp_path / "out" / "t", summary)])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("to teach"))
    assert "--mpp 0.5 -o PATCHES" in line
    _report(
        [
            SlideResult(
                tmp_path / "t.tif", tmp_path / "out" / "t", {**summary, "mpp_source": "aperio"}
            )
        ]
    )
    assert "--mpp" not in capsys.readouterr().out
