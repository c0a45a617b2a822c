"""The training script's record of itself: the command in training_log.json repeats the run."""
from __future__ import annotations

import json

from qtutor.zoo.train import MODEL_DIR, build_parser, command_line


def parse(command: str):
    words = command.split()
    assert words[:4] == ["python", "-m", "qtutor.zoo.train", "model"]
    return build_parser().parse_args(words[3:])


def test_the_recorded_command_parses_back_to_the_same_settings():
    args = build_parser().parse_args(["model", "--lr", "3e-3", "--attention-dropout", "0", "--bf16"])
    again = parse(command_line(args))
    assert {k: v for k, v in vars(again).items() if k != "func"} == {k: v for k, v in vars(args).items() if k != "func"}


def test_the_embedded_model_was_trained_by_its_recorded_command_within_the_hour():
    log = json.loads((MODEL_DIR / "training_log.json").read_text())
    args = parse(log["command"])
    assert args.seed == log["seed"] and args.batch * args.seq_len == log["tokens_per_step"]
    assert log["seconds"] < 3600 and log["best"]["valid_ppl"] == min(entry["valid_ppl"] for entry in log["log"])
