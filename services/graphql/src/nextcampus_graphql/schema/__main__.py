"""`python -m nextcampus_graphql.schema [-o FILE]`: print the schema's SDL (to FILE)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nextcampus_graphql.schema import schema_sdl


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nextcampus_graphql.schema")
    parser.add_argument("-o", "--output", type=Path, help="write the SDL here (default: stdout)")
    args = parser.parse_args(argv)
    sdl = schema_sdl()
    if args.output is None:
        print(sdl, end="")
    else:
        args.output.write_text(sdl)


if __name__ == "__main__":
    main()
