"""The harness's own moving parts that need no proxy: the askpass script and the config
writer. A wrong askpass would make login tests pass or fail for the wrong reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.integration.harness import Askpass, ConfigPaths, SshdTarget, write_proxy_config
from tests.waiting import eventually

CODE_PROMPT = "(alice@db01@127.0.0.1) Break-glass code for alice: "
JUSTIFICATION_PROMPT = "(alice@db01@127.0.0.1) Justification (ticket and reason): "


def ask(askpass: Askpass, prompt: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(askpass.script), prompt], capture_output=True, text=True, timeout=10, check=False
    )


def test_askpass_answers_each_prompt_in_order_then_gives_up(tmp_path: Path) -> None:
    askpass = Askpass(
        tmp_path, codes=["BG-abc-secret"], justifications=["short", "INC-1 a good reason"]
    )

    assert ask(askpass, CODE_PROMPT).stdout == "BG-abc-secret\n"
    assert ask(askpass, JUSTIFICATION_PROMPT).stdout == "short\n"
    assert ask(askpass, JUSTIFICATION_PROMPT).stdout == "INC-1 a good reason\n"
    exhausted = ask(askpass, JUSTIFICATION_PROMPT)
    assert exhausted.returncode != 0
    assert exhausted.stdout == ""
    assert ask(askpass, CODE_PROMPT).returncode != 0
    assert askpass.prompts() == [CODE_PROMPT] + [JUSTIFICATION_PROMPT] * 3 + [CODE_PROMPT]
    assert len(askpass.code_prompts()) == 2
    assert len(askpass.justification_prompts()) == 3


def test_askpass_refuses_prompts_it_does_not_know(tmp_path: Path) -> None:
    askpass = Askpass(tmp_path, codes=["c"], justifications=["j"])

    result = ask(askpass, "Are you sure you want to continue connecting (yes/no)? ")

    assert result.returncode != 0
    assert result.stdout == ""


def test_askpass_keeps_answers_verbatim(tmp_path: Path) -> None:
    tricky = 'INC-7 «db01» $HOME `id` "quoted" 100% \\n'
    askpass = Askpass(tmp_path, codes=["c"], justifications=[tricky])

    assert ask(askpass, JUSTIFICATION_PROMPT).stdout == tricky + "\n"


def test_askpass_gate_holds_the_code_until_released(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    askpass = Askpass(tmp_path / "a", codes=["the-code"], justifications=["j"], gate=gate)
    process = subprocess.Popen(
        [str(askpass.script), CODE_PROMPT], stdout=subprocess.PIPE, text=True
    )
    try:
        eventually(askpass.asked_for_code, within=10, what="askpass to reach the gate")
        assert process.poll() is None  # held at the gate
        gate.touch()
        stdout, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert stdout == "the-code\n"


def test_config_writer_pins_targets_and_keeps_state_in_the_tmp_dir(
    tmp_path: Path, target: SshdTarget
) -> None:
    config = write_proxy_config(
        tmp_path,
        40022,
        {"db01": target.target_entry(logins=[target.login, "nobody"])},
        policy={"justification": {"pattern": r"INC-\d+"}, "max_session": "30m"},
    )

    document = yaml.safe_load(config.read_text())
    assert document["listen"] == {
        "host": "127.0.0.1",
        "port": 40022,
        "host_key": str(tmp_path / "proxy_host_key"),
    }
    assert document["policy"]["justification"] == {"min_length": 15, "pattern": r"INC-\d+"}
    assert document["policy"]["max_session"] == "30m"
    entry = document["targets"]["db01"]
    assert entry["host"] == "127.0.0.1"
    assert entry["port"] == target.port
    assert entry["host_key"] == target.host_pub
    assert entry["identity_file"] == str(target.proxy_key)
    assert entry["logins"] == [target.login, "nobody"]
    paths = ConfigPaths.of(config)
    assert paths.port == 40022
    assert paths.database.parent == tmp_path
    assert paths.recordings.is_dir()
