"""DDP that works under Hydra, for single runs and for multirun sweeps.

Lightning's script launcher re-executes ``sys.argv`` in each child process. Under Hydra that breaks
twice (lightning-hydra-template #393, Lightning #11300): with ``-m`` every child re-runs the whole
sweep, and each child composes its own timestamped output directory. ``HydraDDPStrategy`` launches
children with the *current job's* overrides (``HydraConfig.runtime``'s task overrides, i.e. one
point of the sweep), in Hydra's single-run mode, pinned to the parent's output directory, with no
``.hydra/`` subdir of their own. The CLI restores the environment and destroys the process group
after each job so the next job of a sweep starts cleanly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

# Set in the environment of the children this launcher starts.
_CHILD_FLAG = "LIT_SR_DDP_CHILD"


def hydra_child_command(local_rank: int) -> tuple[list[str], str]:
    """Command and cwd that re-run this Hydra job (not the sweep) as DDP rank ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    import __main__

    if getattr(__main__, "__spec__", None) is not None and __main__.__spec__ is not None:
        command = [sys.executable, "-m", __main__.__spec__.name]
    else:
        command = [sys.executable, str(Path(get_original_cwd(), sys.argv[0]).resolve())]
    job_overrides = [o for o in hc.overrides.task if not o.startswith("hydra.")]
    command += list(job_overrides)
    if hc.job.config_name and hc.job.config_name != "config":
        command += ["--config-name", hc.job.config_name]
    output_dir = hc.runtime.output_dir
    command += [
        f"hydra.run.dir={_quote(output_dir)}",
        f"hydra.job.name={hc.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
        "hydra/hydra_logging=disabled",
    ]
    return command, get_original_cwd()


def _quote(value: str) -> str:
    # Hydra's override grammar needs quotes around paths with special characters.
    return "'" + value.replace("'", "\\'") + "'"


class _HydraJobLauncher(_SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # plain script: Lightning's launcher is right
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        for local_rank in range(1, self.num_processes):
            env = os.environ.copy()
            env["LOCAL_RANK"] = str(local_rank)
            env[_CHILD_FLAG] = "1"
            command, cwd = hydra_child_command(local_rank)
            self.procs.append(subprocess.Popen(command, env=env, cwd=cwd))


class HydraDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose child processes run the current Hydra job, not ``sys.argv``.

    A LightningModule may declare ``ddp_find_unused_parameters = True`` (the adversarial engine does
    in its 'toggle' mode, where each update leaves the other network unused); the strategy then wraps
    it with ``find_unused_parameters=True`` whatever the trainer config says, so ``trainer=ddp`` works
    for every model.
    """

    strategy_name = "hydra_ddp"

    def _setup_model(self, model):
        module = self.lightning_module
        if getattr(module, "ddp_find_unused_parameters", False) and not self._ddp_kwargs.get("find_unused_parameters"):
            self._ddp_kwargs["find_unused_parameters"] = True
        return super()._setup_model(model)

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        if not self.cluster_environment.creates_processes_externally:
            self._launcher = _HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def is_ddp_child() -> bool:
    return os.environ.get(_CHILD_FLAG) == "1"
