"""Train a scheme:

    python -m fgattn_jax.train --config configs/baseline.py[:preset] [--config.KEY=VALUE ...] [--workdir DIR]

Running again with the same --workdir resumes from its latest checkpoint. SIGTERM or Ctrl-C saves and
exits; run the same command to continue. Several hosts: start one process per host with --coordinator,
--num-processes and --process-id (none of them under SLURM's srun or Open MPI's mpirun, where JAX finds its peers,
nor on a TPU pod). A SIGTERM to any one of several processes stops them all at the next logged step.
"""

from __future__ import annotations

import errno
import os
import sys

from fgattn_jax import cli


def check_hosts(p, args) -> None:
  """A hand-launched cluster needs all three multi-host flags, consistent (TPU pods and SLURM need none): checked
  here, before anything starts: jax.distributed refuses a missing or inconsistent one with a traceback."""
  flags = {"--coordinator": args.coordinator, "--num-processes": args.num_processes, "--process-id": args.process_id}
  missing = [flag for flag, value in flags.items() if value is None]
  if len(missing) == len(flags):
    return  # one process, or a cluster JAX finds by itself
  if missing:
    p.error(
      f"several hosts need --coordinator ADDRESS:PORT (process 0's), --num-processes N and --process-id I "
      f"(0 to N-1) on every process; missing: {', '.join(missing)}"
    )
  host, _, port = args.coordinator.rpartition(":")
  if not host or not port.isdigit():
    p.error(f"--coordinator {args.coordinator}: give process 0's address and a free port, e.g. 10.0.0.1:23456")
  if args.num_processes < 1:
    p.error(f"--num-processes {args.num_processes}: must be 1 or more")
  if not 0 <= args.process_id < args.num_processes:
    p.error(
      f"--process-id {args.process_id}: must be 0 to {args.num_processes - 1} with --num-processes "
      f"{args.num_processes} (0 on the coordinator's host)"
    )


def tensorboard_hint(logdir: str) -> str:
  """The command that shows the run's curves. The event files are written with tensorboardX (a dependency);
  viewing them needs TensorBoard itself, which `pip install -e .` does not bring: then the hint installs it first."""
  import shutil

  view = f"tensorboard --logdir {logdir}"
  return view if shutil.which("tensorboard") else f"pip install tensorboard && {view}"


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = cli.parser("python -m fgattn_jax.train", __doc__, argv)
  p.add_argument("--config", required=True, help="config file, optionally with a preset: configs/baseline.py:cub")
  p.add_argument("--workdir", help="where checkpoints, metrics and plots go (default: workdirs/<config>[_<preset>])")
  p.add_argument("--coordinator", help="multi-host: address:port of process 0")
  p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
  p.add_argument("--process-id", type=int, help="multi-host: this process's index")
  p.add_argument("--no-progress", action="store_true", help="no progress bar (plain log lines only)")
  args, pairs = cli.parse(p, argv)
  check_hosts(p, args)
  cli.setup_logging()

  # Imported after argument parsing, so that --help answers at once.
  import jax

  from fgattn_jax import config as config_lib
  from fgattn_jax import evaluation
  from fgattn_jax.training import loop, mesh, writers

  try:
    cfg = config_lib.config_from_args(args.config, pairs)
  except config_lib.ConfigError as e:
    p.error(str(e))
  mesh.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  path, _, preset = args.config.partition(":")
  workdir = args.workdir or os.path.join(
    "workdirs", os.path.splitext(os.path.basename(path))[0] + (f"_{preset}" if preset else "")
  )
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    p.error(f"--workdir {workdir} is a file: give a folder (a new one, or a run's to resume it)")
  if jax.process_index() == 0:
    print(
      f"training {args.config} in {workdir} on {jax.device_count()} {jax.default_backend()} device(s)", file=sys.stderr
    )
  try:
    results = loop.run(cfg, workdir, progress=not args.no_progress)
  except loop.Interrupted as e:
    print(f"\n{e} received: saved a checkpoint in {workdir}. Run the same command to continue.", file=sys.stderr)
    return 130 if str(e) == "SIGINT" else 143
  except KeyboardInterrupt:  # a second Ctrl-C: out at once, without saving
    print(f"\ninterrupted without saving: rerunning resumes from the last checkpoint in {workdir}", file=sys.stderr)
    return 130
  except loop.NonFiniteLoss as e:
    print(f"\nerror: {e}", file=sys.stderr)
    return 1
  except cli.user_errors() as e:  # a missing data set, weight file or setting: the message says what to do
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (OSError, ValueError) as e:  # a read-only or full disk; orbax's writer reports a full one as a ValueError
    full = "RESOURCE_EXHAUSTED" in str(e) or "No space left" in str(e)
    if not (full or isinstance(e, OSError) and e.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT)):
      raise
    why = "no space left on its disk" if full else e.strerror or str(e)
    print(
      f"error: cannot write in {workdir}: {why}. Free space or choose a writable --workdir; running the same "
      "command again resumes from the last complete checkpoint.",
      file=sys.stderr,
    )
    return 1
  if jax.process_index() == 0:
    lines = {name if name == "logits" else f"{name} head": evaluation.summary_line(r) for name, r in results.items()}
    lines.update(
      {
        "workdir": workdir,
        "checkpoints": os.path.join(workdir, "checkpoints"),
        "curves": os.path.join(workdir, "curves.png"),
        "evaluate": f"python -m fgattn_jax.evaluate --workdir {workdir}",
      }
    )
    if cfg.log.tensorboard:  # (log.tensorboard=false writes none)
      lines["tensorboard"] = tensorboard_hint(os.path.join(workdir, "tensorboard"))
    print(writers.summary(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
