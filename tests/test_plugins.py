"""Plugin discovery with fake distributions on sys.path, `dnn plugins` and `dnn check`."""

import json

import pytest
from click.testing import CliRunner

from dnn import optimizers, plugins
from dnn.cli import main
from dnn.errors import PluginLoadError, UnknownPluginError
from tests.test_cli import tiny  # noqa: F401  (the tiny dataset plugin fixture)

GOOD_OPTIMIZER = """
from dnn.optimizers import Optimizer

class Halver(Optimizer):
    def __init__(self, learning_rate=0.5):
        super().__init__(learning_rate=learning_rate)

    def update(self, param, grad, state):
        param -= self.learning_rate * grad
"""


def test_good_plugin_is_found_and_loaded_lazily(install_fake_plugin):
    import sys

    install_fake_plugin("fake-halver", "2.1", {"dnn.optimizers": {"halver": "fake_halver:Halver"}},
                        {"fake_halver": GOOD_OPTIMIZER})
    plugin = plugins.find("optimizer", "halver")
    assert (plugin.distribution, plugin.version) == ("fake-halver", "2.1")
    assert "fake_halver" not in sys.modules  # discovery imports nothing
    assert plugins.load("optimizer", "halver").__name__ == "Halver"
    assert "fake_halver" in sys.modules


MISNAMED_ATTRIBUTE = """
from dnn.optimizers import Optimizer

class Decaying(Optimizer):
    def __init__(self, learning_rate=0.01, weight_decay=0.01):
        super().__init__(learning_rate)
        self.wd = weight_decay

    def update(self, param, grad, state):
        param -= self.learning_rate * (grad + self.wd * param)
"""


def test_a_hyperparameter_the_plugin_does_not_keep_is_refused_by_name(install_fake_plugin):
    install_fake_plugin("fake-decaying", "0.3", {"dnn.optimizers": {"decaying":
                                                                    "fake_decaying:Decaying"}},
                        {"fake_decaying": MISNAMED_ATTRIBUTE})
    assert optimizers.get("decaying").get_config() == {"learning_rate": 0.01}
    with pytest.raises(PluginLoadError, match="'decaying' from fake-decaying 0.3 keeps no "
                                              "attribute weight_decay, so the weight_decay given "
                                              "is lost"):
        optimizers.get("decaying", weight_decay=0.5)
    result = CliRunner().invoke(main, ["train", "--optimizer", "decaying", "--opt",
                                       "weight_decay=0.5"])  # refused before any data
    assert result.exit_code == 1 and "keeps no attribute weight_decay" in result.output


def test_broken_plugin_is_reported_and_others_keep_working(install_fake_plugin):
    install_fake_plugin("fake-broken", "0.1", {"dnn.optimizers": {"broken": "fake_broken:Nope"}},
                        {"fake_broken": "raise ImportError('needs libfoo')\n"})
    with pytest.raises(PluginLoadError, match="'broken' from fake-broken 0.1 failed to load: "
                                              "ImportError: needs libfoo"):
        plugins.load("optimizer", "broken")
    assert plugins.load("optimizer", "adam").__name__ == "Adam"
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.output)}
    assert rows[("optimizer", "broken")]["status"] == "broken"
    assert "needs libfoo" in rows[("optimizer", "broken")]["detail"]
    assert rows[("optimizer", "adam")]["status"] == "available"
    assert rows[("backend", "cpu")]["distribution"] == "dnn-framework"


def test_same_distribution_listed_twice_is_collapsed(install_fake_plugin, monkeypatch):
    root = install_fake_plugin("fake-halver", "2.1",
                               {"dnn.optimizers": {"halver": "fake_halver:Halver"}},
                               {"fake_halver": GOOD_OPTIMIZER})
    monkeypatch.syspath_prepend(str(root))  # the same dist-info twice on sys.path
    plugins.catalog.cache_clear()
    assert plugins.names("optimizer").count("halver") == 1
    assert plugins.catalog("optimizer").refused == ()


def test_third_party_cannot_take_a_builtin_name(install_fake_plugin):
    install_fake_plugin("fake-evil", "1.0", {"dnn.optimizers": {"adam": "fake_evil:Evil"}},
                        {"fake_evil": GOOD_OPTIMIZER.replace("Halver", "Evil")})
    with pytest.warns(UserWarning, match="'adam' from fake-evil: .*already provided by dnn-framework"):
        catalog = plugins.catalog("optimizer")
    assert catalog.plugins["adam"].distribution == "dnn-framework"
    assert plugins.load("optimizer", "adam").__module__ == "dnn.optimizers.builtin"
    rows = json.loads(CliRunner().invoke(main, ["plugins", "--json"]).output)
    assert any(r["name"] == "adam" and r["status"] == "refused" and r["distribution"] == "fake-evil"
               for r in rows)


def test_unknown_name_lists_installed_and_uninstalled_tree_says_how(monkeypatch):
    with pytest.raises(UnknownPluginError, match="unknown dataset 'svhn'; installed: .*mnist"):
        plugins.find("dataset", "svhn")
    monkeypatch.setattr(plugins, "DISTRIBUTION", "not-installed-dist")
    with pytest.raises(UnknownPluginError, match="pip install -e ."):
        plugins.find("dataset", "svhn")


def test_plugins_command_shows_gpu_status():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    gpu_line = next(line for line in result.output.splitlines() if line.split()[:2] == ["backend", "gpu"])
    from dnn.backends.gpu import GpuBackend

    availability = GpuBackend.is_available()
    if availability:
        assert gpu_line.endswith("available")
    else:
        assert f"unavailable: {availability.reason}" in gpu_line


def test_check_command_prints_a_table(install_fake_plugin):
    install_fake_plugin("fake-halver", "2.1", {"dnn.optimizers": {"halver": "fake_halver:Halver"}},
                        {"fake_halver": GOOD_OPTIMIZER})
    result = CliRunner().invoke(main, ["check", "--backend", "cpu"])
    assert result.exit_code == 0, result.output
    assert "optimizer halver         cpu          pass" in result.output
    assert "optimizer rmsprop        cpu          pass" in result.output


def test_check_command_fails_for_a_wrong_optimizer(install_fake_plugin):
    wrong = GOOD_OPTIMIZER.replace("param -= self.learning_rate * grad",
                                   "param += self.learning_rate * grad")
    install_fake_plugin("fake-wrong", "1.0", {"dnn.optimizers": {"wrong": "fake_wrong:Halver"}},
                        {"fake_wrong": wrong})
    result = CliRunner().invoke(main, ["check", "--backend", "cpu"])
    assert result.exit_code == 1
    assert "optimizer wrong" in result.output and "did not lower the loss" in result.output


@pytest.mark.parametrize("broken_update, message", [
    ("param = param - self.learning_rate * grad",
     "optimizer 'broken' from fake-broken 1.0: update() left every parameter as it was: change "
     "param in place (param -= step), not by assigning a new array to the name (on cpu)"),
    ("raise RuntimeError('boom')",
     "optimizer 'broken' from fake-broken 1.0 failed in update(): RuntimeError: boom (on cpu)"),
    ("return param - self.learning_rate * grad",
     "optimizer 'broken' from fake-broken 1.0: update() returned a new array; it must change "
     "param and its state in place (param -= ...) (on cpu)"),
])
def test_check_command_says_what_a_broken_optimizer_does(install_fake_plugin, broken_update,
                                                         message):
    broken = GOOD_OPTIMIZER.replace("param -= self.learning_rate * grad", broken_update)
    install_fake_plugin("fake-broken", "1.0", {"dnn.optimizers": {"broken": "fake_broken:Broken"}},
                        {"fake_broken": broken.replace("Halver", "Broken")})
    result = CliRunner().invoke(main, ["check", "--backend", "cpu"])
    assert result.exit_code == 1, result.output
    assert f"optimizer broken         all backends fail: {message}" in result.output
    assert "Traceback" not in result.output
    assert "optimizer rmsprop        cpu          pass" in result.output


MOMENTUM_OPTIMIZER = """
from dnn.optimizers import Optimizer

class Heavy(Optimizer):
    def __init__(self, learning_rate=0.1, beta=0.9):
        super().__init__(learning_rate=learning_rate)
        self.beta = beta

    def init_state(self, param):
        return {"m": self.xp.zeros_like(param)}

    def update(self, param, grad, state):
        m = state["m"]
        MOMENTUM
        param -= self.learning_rate * m
"""


@pytest.mark.parametrize("momentum, message", [
    ("m[...] = self.beta * m + grad", None),
    ("m = self.beta * m + grad",
     "Heavy.update() never changed state['m'] (weight 0) in 6 steps: a new value assigned to a "
     "local name is lost; write it in place (m[...] = ...)"),
    ("m = state['m'] = self.beta * m + grad",
     "Heavy.update() bound a new array to state['m']: write into the state in place "
     "(state['m'][...] = ...)"),
])
def test_check_catches_an_optimizer_that_rebinds_its_state(install_fake_plugin, momentum,
                                                           message):
    install_fake_plugin("fake-heavy", "1.0", {"dnn.optimizers": {"heavy": "fake_heavy:Heavy"}},
                        {"fake_heavy": MOMENTUM_OPTIMIZER.replace("MOMENTUM", momentum)})
    result = CliRunner().invoke(main, ["check", "--backend", "cpu"])
    if message is None:
        assert result.exit_code == 0, result.output
        assert "optimizer heavy          cpu          pass" in result.output
    else:
        assert result.exit_code == 1, result.output
        assert f"optimizer heavy          all backends fail: {message}" in result.output


def backend_source(class_name: str, available: str, methods: str = "") -> str:
    """A backend plugin module: class ``class_name`` (registered name: its lower case) whose
    ``is_available`` runs ``available``, with ``methods`` (class-level source) after it."""
    return f"""
import numpy as np
from dnn.backends import Availability, Backend

class {class_name}(Backend):
    name = "{class_name.lower()}"
    xp = np

    @classmethod
    def is_available(cls):
        {available}
{methods}"""


@pytest.mark.parametrize("available, start, problem", [
    ("raise RuntimeError('driver exploded')", "pass",
     "failed in is_available(): RuntimeError: driver exploded"),
    ("return False", "pass", ": is_available() must return a dnn.backends.Availability, not bool"),
    ("return Availability(True)", "raise OSError('no device')",
     "failed to start: OSError: no device"),
    (None, None, "is not a dnn.backends.Backend subclass"),
])
def test_a_broken_backend_plugin_is_named_and_takes_nothing_down(install_fake_plugin, available,
                                                                 start, problem):
    source = ("class Broken:\n    pass\n" if available is None else
              backend_source("Broken", available, f"    def __init__(self):\n        {start}\n"))
    install_fake_plugin("fake-broken-backend", "0.2",
                        {"dnn.backends": {"broken": "fake_bb:Broken"}}, {"fake_bb": source})
    blame = f"backend 'broken' from fake-broken-backend 0.2{'' if problem[0] == ':' else ' '}"
    listed = CliRunner().invoke(main, ["plugins"])
    assert listed.exit_code == 0, listed.output
    if start != "raise OSError('no device')":  # `dnn plugins` asks, it does not construct
        assert f"broken: {blame}{problem}" in listed.output
    assert "backend   cpu " in listed.output and "available" in listed.output
    trained = CliRunner().invoke(main, ["train", "--backend", "broken", "--dataset", "none"])
    assert trained.exit_code == 1 and trained.output == f"Error: {blame}{problem}\n"
    named = CliRunner().invoke(main, ["check", "--backend", "broken", "--backend", "cpu"])
    assert named.exit_code == 1 and named.output == f"Error: {blame}{problem}\n"
    checked = CliRunner().invoke(main, ["check"])
    assert checked.exit_code == 1, checked.output
    assert f"optimizer adam           broken       fail: {blame}{problem}" in checked.output
    if start == "raise OSError('no device')":  # the backend's own line words it alike
        assert f"backend   broken         against cpu  fail: {blame}{problem}" in checked.output
    assert "optimizer adam           cpu          pass" in checked.output
    assert "Traceback" not in listed.output + trained.output + checked.output


WRONG_KERNEL_BACKEND = backend_source("Sloppy", "return Availability(True)", """
    def relu(self, z):
        z[...] = np.abs(z)  # wrong for negative inputs
        return z
""")


def test_check_holds_every_backend_plugin_to_the_cpu_backend(install_fake_plugin):
    install_fake_plugin("fake-sloppy", "1.0", {"dnn.backends": {"sloppy": "fake_sloppy:Sloppy"}},
                        {"fake_sloppy": WRONG_KERNEL_BACKEND})
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert ("backend   sloppy         against cpu  fail: kernel dense_relu_forward (float32) on "
            "sloppy differs from cpu (not equal to tolerance rtol=1e-05, atol=1e-07)") in lines
    assert any(line.startswith("optimizer sgd            sloppy       fail: SGD: float32 step losses "
                               "differ from the cpu backend's (not equal to tolerance")
               for line in lines)
    assert "backend   cpu" not in result.output  # the reference is not checked against itself
    from dnn.backends.gpu import GpuBackend

    if not GpuBackend.is_available():
        assert any(line.startswith("backend   gpu            against cpu  unavailable: CuPy")
                   for line in lines)
    if "strict" in plugins.names("backend"):
        assert "backend   strict         against cpu  pass" in lines
    named = CliRunner().invoke(main, ["check", "--backend", "cpu"])
    assert named.exit_code == 0 and "sloppy" not in named.output, named.output


def test_check_loads_the_data_of_the_datasets_it_is_given(install_fake_plugin, tmp_path):
    from tests.test_cli import BROKEN_DATASET, TINY_DATASET

    install_fake_plugin("fake-tiny", "1.0", {"dnn.datasets": {"tiny": "fake_tiny:Tiny"}},
                        {"fake_tiny": TINY_DATASET})
    install_fake_plugin("fake-bytes", "1.0", {"dnn.datasets": {"bytes": "fake_bytes:Broken"}},
                        {"fake_bytes": BROKEN_DATASET.replace(
                            "RETURN", "return ((x * 255).astype(np.uint8), y), (x, y)")})
    quick = ["check", "--backend", "cpu"]
    plain = CliRunner().invoke(main, quick)
    assert plain.exit_code == 0, plain.output  # the classes are sound; no data is loaded
    assert ("dataset   bytes          its class    pass: give --dataset bytes to check its "
            "data too") in plain.output.splitlines()
    good = CliRunner().invoke(main, [*quick, "--dataset", "tiny"])
    assert good.exit_code == 0 and "dataset   tiny           its data     pass" in good.output
    bad = CliRunner().invoke(main, [*quick, "--dataset", "tiny", "--dataset", "bytes"])
    assert bad.exit_code == 1
    assert ("dataset   bytes          its data     fail: dataset 'bytes' from fake-bytes 1.0 "
            "broke the dataset contract: the train images are uint8, not float32"
            ) in bad.output.splitlines()
    unknown = CliRunner().invoke(main, [*quick, "--dataset", "cifar"])
    assert unknown.exit_code == 2 and "unknown dataset 'cifar'" in unknown.output


EXITING_UPDATE = GOOD_OPTIMIZER.replace("param -= self.learning_rate * grad",
                                        "raise SystemExit(3)")


def test_a_plugin_calling_sys_exit_is_a_failure_like_any_other(install_fake_plugin,
                                                                tiny):  # noqa: F811
    install_fake_plugin("fake-quits", "0.1", {"dnn.optimizers": {"quits": "fake_quits:Nope"}},
                        {"fake_quits": "import sys\nsys.exit(3)\n"})
    install_fake_plugin("fake-stops", "0.2", {"dnn.optimizers": {"stops": "fake_stops:Halver"}},
                        {"fake_stops": EXITING_UPDATE})
    listed = CliRunner().invoke(main, ["plugins"])
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if " quits " in line)
    assert line.split()[:4] == ["optimizer", "quits", "fake-quits", "0.1"]
    assert line.endswith("broken: optimizer 'quits' from fake-quits 0.1 failed to load: "
                         "SystemExit: 3")
    trained = CliRunner().invoke(main, ["train", "--dataset", "tiny", "--optimizer", "stops"])
    assert trained.exit_code == 1
    assert trained.output == ("Epoch 1/5\nError: optimizer 'stops' from fake-stops 0.2 failed "
                              "in update(): SystemExit: 3\n")


def test_what_a_plugin_prints_at_import_stays_out_of_the_json(install_fake_plugin):
    install_fake_plugin("fake-chatty", "1.0", {"dnn.optimizers": {"chatty": "fake_chatty:Halver"}},
                        {"fake_chatty": "print('hello from chatty')\n" + GOOD_OPTIMIZER})
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["chatty"]["status"] == "available"
    assert "hello from chatty" in result.stderr


def test_check_optimizer_checks_that_plugin_alone(install_fake_plugin):
    install_fake_plugin("fake-halver", "2.1", {"dnn.optimizers": {"halver": "fake_halver:Halver"}},
                        {"fake_halver": GOOD_OPTIMIZER})
    result = CliRunner().invoke(main, ["check", "--backend", "cpu", "--optimizer", "halver"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["optimizer halver         cpu          pass"]
    unknown = CliRunner().invoke(main, ["check", "--optimizer", "nope"])
    assert unknown.exit_code == 2 and "unknown optimizer 'nope'" in unknown.output


STALE_RATE = GOOD_OPTIMIZER.replace("param -= self.learning_rate * grad",
                                    "param -= self.get_config()['learning_rate'] * grad")


def test_check_fails_a_plugin_whose_step_keeps_a_stale_host_number(install_fake_plugin):
    """A learning rate read as a host number (from the config) is baked into a captured
    step: ``dnn check`` trains it through a replayed step with the rate lowered every batch
    and fails it, saying what to read instead."""
    install_fake_plugin("fake-stale", "1.0", {"dnn.optimizers": {"stale": "fake_stale:Halver"}},
                        {"fake_stale": STALE_RATE})
    result = CliRunner().invoke(main, ["check", "--backend", "cpu", "--optimizer", "stale"])
    assert result.exit_code == 1, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("optimizer"))
    assert line.startswith("optimizer stale          all backends fail: Halver's step is "
                           "wrong when captured and replayed, as the gpu backend runs it")
    assert "read the hyper-parameters and iterations as the device arrays" in line


def test_plugin_columns_stay_aligned_with_long_names(install_fake_plugin):
    long_name = "a_very_long_optimizer_plugin_name"
    install_fake_plugin("fake-long-distribution-name", "10.2.3",
                        {"dnn.optimizers": {long_name: "fake_long:Halver"}},
                        {"fake_long": GOOD_OPTIMIZER})
    lines = CliRunner().invoke(main, ["plugins"]).output.splitlines()
    statuses = {line.index(" available") if " available" in line else
                line.index(" unavailable") for line in lines}
    assert len(statuses) == 1, lines  # every status starts in the same column
    checked = CliRunner().invoke(main, ["check", "--backend", "cpu", "--optimizer", long_name])
    assert checked.output.split()[:4] == ["optimizer", long_name, "cpu", "pass"]
    assert checked.output.index("cpu") > len("optimizer ") + len(long_name)
