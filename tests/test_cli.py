from harness.cli import main


def test_unknown_command_is_rejected(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "run", "status", "report", "tasks", "analyze"):
        assert cmd in out
