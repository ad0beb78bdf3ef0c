import subprocess
import sys

from gfldet.cli import main


def test_unknown_command_suggests_the_nearest(capsys):
    assert main(["trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_version_runs_as_console_module():
    out = subprocess.run([sys.executable, "-m", "gfldet.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gfldet ")



def test_repeated_opts_add_up():
    from gfldet.cli import build_parser

    for command in ("train", "test", "export", "benchmark"):
        extra = ["CKPT"] if command in ("test", "export") else []
        args = build_parser(command).parse_args([command, "CFG", *extra, "--opts", "a=1", "--opts", "b=2", "c=3"])
        assert args.opts == ["a=1", "b=2", "c=3"], command
