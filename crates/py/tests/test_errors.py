"""Errors are Python exceptions carrying fedpace's one-line messages; nothing a user
passes crashes the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import fedpace

OK = {
    "rounds": 2,
    "data": {"source": "synthetic", "num_clients": 6},
    "strategy": {"name": "fedavg", "clients_per_round": 3},
}


def test_exception_classes() -> None:
    assert issubclass(fedpace.ConfigError, fedpace.FedpaceError)
    assert issubclass(fedpace.ConfigError, ValueError)
    assert issubclass(fedpace.SetupError, ValueError)
    assert issubclass(fedpace.PolicyError, fedpace.RunError)
    assert issubclass(fedpace.RunError, RuntimeError)


def test_unknown_key() -> None:
    with pytest.raises(fedpace.ConfigError) as e:
        fedpace.run(dict(OK, roundz=3), progress=False)
    msg = str(e.value)
    assert msg.startswith("config (dict): ") and "roundz" in msg and "\n" not in msg


def test_bad_value_in_a_file_and_in_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "exp.toml"
    p.write_text("rounds = 2\n[client]\nlr = -0.1\n")
    with pytest.raises(fedpace.ConfigError) as e:
        fedpace.run(str(p), progress=False)
    assert str(e.value) == f"{p}: client.lr = -0.1: a finite rate > 0"
    with pytest.raises(fedpace.ConfigError) as e:
        fedpace.run(OK, set={"rounds": 0}, progress=False)
    assert str(e.value) == "--set rounds=0: rounds = 0: at least 1"
    with pytest.raises(fedpace.ConfigError, match=r"set: strategy.server_lr = None"):
        fedpace.run(OK, set={"strategy.server_lr": None}, progress=False)
    with pytest.raises(fedpace.ConfigError, match=r"data.num_clients = \(1\+2j\): a value of type complex"):
        fedpace.run(dict(OK, data={"source": "synthetic", "num_clients": 1 + 2j}), progress=False)
    with pytest.raises(fedpace.ConfigError, match="seed = -1"):
        fedpace.run(OK, seed=-1, progress=False)


def test_missing_file() -> None:
    with pytest.raises(fedpace.ConfigError) as e:
        fedpace.run("no/such/experiment.toml", progress=False)
    assert str(e.value).startswith("no/such/experiment.toml: cannot read:")


def test_toml_syntax_error() -> None:
    with pytest.raises(fedpace.ConfigError, match=r"^config \(TOML text\): "):
        fedpace.run("rounds = = 2\n", progress=False)


def test_missing_data_and_taken_out_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(fedpace.ConfigError, match=r"data.source: unknown variant `mine`"):
        fedpace.run(dict(OK, data={"source": "mine"}), progress=False)
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(fedpace.SetupError, match="not empty"):
        fedpace.run(OK, out=tmp_path, progress=False)
    assert (tmp_path / "x").read_text() == "keep me"


class Boom:
    def __init__(self, at_round: int) -> None:
        self.at_round = at_round

    def plan(self, round, client, base):  # type: ignore[no-untyped-def]
        if round == self.at_round:
            return 1 / 0
        return base.lr


def test_exception_inside_the_policy() -> None:
    with pytest.raises(fedpace.PolicyError) as e:
        fedpace.run(OK, policy=Boom(2), progress=False)
    msg = str(e.value)
    assert msg.startswith('policy "python": plan(round 2, client ')
    assert msg.endswith("): ZeroDivisionError: division by zero")
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    # The interpreter and the package are fine: the next run works.
    assert fedpace.run(OK, progress=False).summary["rounds_completed"] == 2


def test_exception_inside_observe() -> None:
    class BadObserve:
        def plan(self, round, client, base):  # type: ignore[no-untyped-def]
            return None

        def observe(self, round, client, report):  # type: ignore[no-untyped-def]
            raise KeyError("loss")

    with pytest.raises(fedpace.PolicyError, match=r"observe\(round 1, client \d+\): KeyError") as e:
        fedpace.run(OK, policy=BadObserve(), progress=False)
    assert isinstance(e.value.__cause__, KeyError)


@pytest.mark.parametrize(
    "answer, expected",
    [
        (-0.1, "returned lr = -0.1: expected a finite number > 0 that fits an f32"),
        (float("nan"), "returned lr = NaN: expected a finite number > 0"),
        ("fast", "returned 'fast' (str): expected a rate (a number), the Plan, a dict or None"),
        ({"lrr": 0.1}, 'returned a dict with key "lrr": expected lr, multipliers, prox_mu or max_steps'),
        ({"multipliers": {"tail": 2.0}}, 'multipliers["tail"]: the model has no such parameter group'),
        ({"max_steps": 0}, "returned max_steps = 0: expected at least 1"),
    ],
)
def test_unusable_answers_are_refused(answer, expected) -> None:  # type: ignore[no-untyped-def]
    class Answer:
        def plan(self, round, client, base):  # type: ignore[no-untyped-def]
            return answer

    with pytest.raises(fedpace.PolicyError) as e:
        fedpace.run(OK, policy=Answer(), progress=False)
    assert str(e.value).startswith('policy "python": plan(round 1, client ')
    assert expected in str(e.value), str(e.value)


def test_policy_without_plan_and_bad_policy_options() -> None:
    with pytest.raises(fedpace.ConfigError, match=r"plan\(round, client, base\)"):
        fedpace.run(OK, policy=object(), progress=False)

    class NeedsFactor:
        def __init__(self, factor):  # type: ignore[no-untyped-def]
            self.factor = factor

        def plan(self, round, client, base):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(fedpace.PolicyError, match=r"creating .*NeedsFactor.*TypeError") as e:
        fedpace.run(dict(OK, policy={"name": "mine"}), policy={"mine": NeedsFactor}, progress=False)
    assert isinstance(e.value.__cause__, TypeError)
    with pytest.raises(fedpace.SetupError, match=r"policy.factor = 2: no other keys"):
        fedpace.run(
            dict(OK, policy={"name": "mine", "factor": 2}),
            policy={"mine": NeedsFactor(1)},
            progress=False,
        )


def test_a_progress_callback_that_raises_stops_the_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def stop(rnd, metrics):  # type: ignore[no-untyped-def]
        if rnd == 1:
            raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        fedpace.run(dict(OK, rounds=5), out=tmp_path / "r", progress=stop)
    import json

    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["interrupted"] is True and s["rounds_completed"] == 1


def test_a_second_run_on_a_running_directory_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen = []

    def second(rnd, metrics):  # type: ignore[no-untyped-def]
        # Called while the first run holds its directory: a second run there is refused
        # before it touches a file, even with force.
        if rnd == 1:
            for force in (False, True):
                with pytest.raises(
                    fedpace.SetupError, match="another fedpace run is writing this directory"
                ):
                    fedpace.run(OK, out=tmp_path / "r", force=force, progress=False)
            seen.append(rnd)

    r = fedpace.run(dict(OK, rounds=3), out=tmp_path / "r", progress=second)
    assert seen == [1]
    assert r.summary["rounds_completed"] == 3
    # The lock went with the run.
    assert fedpace.run(OK, out=tmp_path / "r", force=True, progress=False).summary[
        "rounds_completed"
    ] == 2


def test_bad_arrays() -> None:
    x = np.zeros((10, 3))
    y = np.arange(10) % 2
    with pytest.raises(fedpace.SetupError, match=r"y: shape \(9,\): expected \(10,\)"):
        fedpace.data.from_arrays(x, y[:9])
    with pytest.raises(fedpace.SetupError, match="x: shape"):
        fedpace.data.from_arrays(np.zeros(10), y)
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(fedpace.SetupError, match="x: row 4 holds nan"):
        fedpace.data.from_arrays(bad, y)
    with pytest.raises(fedpace.SetupError, match="y: label -1"):
        fedpace.data.from_arrays(x, y - 1)
    with pytest.raises(fedpace.ConfigError, match="unknown variant `dirchlet`"):
        fedpace.data.from_arrays(x, y, partition="dirchlet", num_clients=2)
    with pytest.raises(fedpace.SetupError, match=r"data.partition.alpha = -1"):
        fedpace.data.from_arrays(x, y, partition={"kind": "dirichlet", "alpha": -1}, num_clients=2)
    with pytest.raises(fedpace.SetupError, match="num_clients = 20"):
        fedpace.data.from_arrays(x, y, num_clients=20)
    with pytest.raises(fedpace.ConfigError, match="registering data set \"MNIST\""):
        fed = fedpace.data.from_arrays(x, y, num_clients=2, name="MNIST")
        fedpace.run(OK, data=fed, progress=False)
    with pytest.raises(fedpace.SetupError, match=r"client 1 x: sample shape \[4\]"):
        fedpace.data.from_clients([(x, y), (np.zeros((10, 4)), y)])
