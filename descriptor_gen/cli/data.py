"""`descgen datasets`: the dataset cards."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from descriptor_gen.paths import CachePaths
from descriptor_gen.data.catalog import card_table, dataset_classes
from descriptor_gen.cli.options import DataRoot

app = typer.Typer(rich_markup_mode=None, add_completion=False)


@app.command("datasets")
def datasets_cmd(
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]", help="A card name, or wds:DIR / hf:PATH: print its class names.")] = None,
    data_root: DataRoot = None,
) -> None:
    """List the dataset cards and which are found under the data root, or print one dataset's
    class names, one a line, in label order."""
    if name is None:
        for line in card_table(data_root):
            typer.echo(line)
        return
    for class_name in dataset_classes(name, data_root, CachePaths.resolve().cache_dir):
        typer.echo(class_name)
