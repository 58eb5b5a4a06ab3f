"""`slimline profiles | recipes | spaces | passes`: what ships, validated without importing torch or the runtimes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slimline.cli.console import console
from slimline.core.errors import EXIT_OK


def cmd_profiles(args: argparse.Namespace) -> int:
    import yaml

    from slimline.compress.recipe import profile_recipe
    from slimline.pipeline.runtime_choice import candidate_recipes
    from slimline.profiles.schema import PROFILES_DIR, list_profiles, load_profile

    out = console()
    if args.action == "list":
        for name in list_profiles():
            out.print(f"{name:16s} {load_profile(name).description}", markup=False)
    elif args.action == "show":
        path = PROFILES_DIR / f"{args.name}.yaml"
        profile = load_profile(args.name)
        out.print(path.read_text() if path.is_file() else yaml.safe_dump(profile.model_dump(mode="json")),
                  markup=False, highlight=False)
    else:
        profile = load_profile(Path(args.name))
        steps = profile_recipe(profile)  # an unknown pass or option in the profile's recipe is exit 2 too
        candidates = candidate_recipes(profile)  # target.runtime auto: each candidate's recipe, likewise
        choice = f", {len(candidates)} runtime candidates" if candidates else ""
        out.print(f"{args.name}: valid profile '{profile.name}' ({len(profile.budgets)} budgets, "
                  f"{len(steps)} recipe steps{choice})", markup=False)
    return EXIT_OK


def cmd_recipes(args: argparse.Namespace) -> int:
    from slimline.compress.recipe import load_recipe
    from slimline.profiles.schema import RECIPES_DIR, list_recipes

    out = console()
    if args.action == "list":
        for name in list_recipes():
            steps = load_recipe(name)
            out.print(f"{name:20s} {' -> '.join(step.name for step in steps)}", markup=False)
    elif args.action == "show":
        load_recipe(args.name)
        out.print((RECIPES_DIR / f"{args.name}.yaml").read_text(), markup=False, highlight=False)
    else:
        steps = load_recipe(Path(args.name))
        out.print(f"{args.name}: valid recipe ({' -> '.join(step.name for step in steps) or 'no steps'})",
                  markup=False)
    return EXIT_OK


def cmd_spaces(args: argparse.Namespace) -> int:
    from slimline.compress.search_space_files import SPACES_DIR, list_spaces, load_search_space

    out = console()
    if args.action == "list":
        for name in list_spaces():
            out.print(f"{name:12s} {load_search_space(name).description}", markup=False)
    elif args.action == "show":
        load_search_space(args.name)
        out.print((SPACES_DIR / f"{args.name}.yaml").read_text(), markup=False, highlight=False)
    else:
        space = load_search_space(Path(args.name))
        out.print(f"{args.name}: valid search space ({len(space.parameter_names())} parameters)", markup=False)
    return EXIT_OK


def cmd_passes(args: argparse.Namespace) -> int:
    from slimline.compress.catalogue import catalogue, registry

    out = console()
    entries = catalogue()
    for name, cls in registry().items():
        options = ", ".join(f"{key}={field.get_default(call_default_factory=True)!r}"
                            for key, field in cls.Config.model_fields.items())
        extra = entries[name].extra if name in entries else None
        needs = f", pip install 'slimline\\[{extra}]'" if extra else ""  # escaped: rich would take [extra] for markup
        out.print(f"[bold]{name}[/] ({cls.stage}-level, {'/'.join(sorted(cls.accepts))} -> {cls.produces}{needs})")
        out.print(f"    {((cls.__module__ and sys.modules[cls.__module__].__doc__) or '').strip().splitlines()[0]}")
        out.print(f"    options: {options}", markup=False)
    return EXIT_OK


def _add_list_show_validate(sub: argparse._SubParsersAction, what: str, handler: object) -> None:
    parser = sub.add_parser(what, help=f"list, show or validate {what}")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    actions.add_parser("show").add_argument("name")
    actions.add_parser("validate").add_argument("name", metavar="FILE")
    parser.set_defaults(handler=handler)


def add_catalogue_commands(sub: argparse._SubParsersAction) -> None:
    _add_list_show_validate(sub, "profiles", cmd_profiles)
    _add_list_show_validate(sub, "recipes", cmd_recipes)
    _add_list_show_validate(sub, "spaces", cmd_spaces)  # `slimline search` spaces

    passes = sub.add_parser("passes", help="list registered compression passes")
    passes.add_argument("action", choices=["list"])
    passes.set_defaults(handler=cmd_passes)
