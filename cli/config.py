"""Show or set the project defaults (data set, run folder) and where each value comes from."""
from __future__ import annotations

import click


@click.group("config", invoke_without_command=True)
@click.pass_context
def command(ctx):
    """Show the effective settings and where each came from; `config set KEY VALUE` changes one."""
    if ctx.invoked_subcommand is None:
        from repanalysis import config
        from repanalysis.report import format_table

        rows = [{"setting": s.key, "value": s.value, "from": s.source} for s in config.settings().values()]
        click.echo(format_table(rows))
        click.echo(f"\nproject file: ./{config.PROJECT_FILE}   user file: {config.user_config_path()}")


@command.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--user", is_flag=True, help="Write the user config file instead of ./repanalysis.toml.")
def set_(key, value, user):
    """Set KEY (data.root, data.layout, data.split, data.class_order, runs.dir) to VALUE."""
    from repanalysis import config

    path = config.set_value(key, value, user=user)
    click.echo(f"{key} = {value}  (written to {path})")
