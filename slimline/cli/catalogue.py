"""`slimline profiles | recipes | spaces | passes`: what ships, validated without importing torch or the runtimes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slimline.cli.console import add_json_option, console, print_json
from slimline.core.errors import EXIT_OK


def _profiles_json(args: argparse.Namespace) -> int:
    from slimline.compression.recipe import profile_recipe
    from slimline.profiles.schema import list_profiles, load_profile

    if args.action == "list":
        profiles = [load_profile(name) for name in list_profiles()]
        print_json("profiles", items=[{"name": p.name, "description": p.description, "target": p.target.model_dump(
            mode="json"), "budgets": sorted(p.budgets)} for p in profiles])
        return EXIT_OK
    profile = load_profile(args.name if args.action == "show" else Path(args.name))
    steps = profile_recipe(profile)
    print_json("profile", name=profile.name, valid=True, profile=profile.model_dump(mode="json"),
               recipe=[{"pass": step.name, "with": step.config_dict()} for step in steps])
    return EXIT_OK


def _recipes_json(args: argparse.Namespace) -> int:
    from slimline.compression.recipe import load_recipe
    from slimline.profiles.schema import list_recipes

    if args.action == "list":
        print_json("recipes", items=[{"name": name, "passes": [step.name for step in load_recipe(name)]}
                                     for name in list_recipes()])
        return EXIT_OK
    steps = load_recipe(args.name if args.action == "show" else Path(args.name))
    print_json("recipe", name=str(args.name), valid=True,
               steps=[{"pass": step.name, "with": step.config_dict()} for step in steps])
    return EXIT_OK


def _spaces_json(args: argparse.Namespace) -> int:
    from slimline.compression.search_space_files import list_spaces, load_search_space

    if args.action == "list":
        print_json("spaces", items=[{"name": name, "description": load_search_space(name).description}
                                    for name in list_spaces()])
        return EXIT_OK
    space = load_search_space(args.name if args.action == "show" else Path(args.name))
    print_json("space", name=str(args.name), valid=True, description=space.description,
               parameters=sorted(space.parameter_names()), space=space.raw)
    return EXIT_OK


def cmd_profiles(args: argparse.Namespace) -> int:
    if args.json:
        return _profiles_json(args)
    import yaml

    from slimline.compression.recipe import profile_recipe
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
    if args.json:
        return _recipes_json(args)
    from slimline.compression.recipe import load_recipe
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
    if args.json:
        return _spaces_json(args)
    from slimline.compression.search_space_files import SPACES_DIR, list_spaces, load_search_space

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
    from slimline.compression.catalogue import catalogue, registry

    out = console()
    entries = catalogue()
    if args.json:
        print_json("passes", items=[{
            "name": name, "stage": cls.stage, "accepts": sorted(cls.accepts), "produces": cls.produces,
            "extra": entries[name].extra if name in entries else None,
            "summary": ((cls.__module__ and sys.modules[cls.__module__].__doc__) or "").strip().split("\n\n")[0],
            "options": {key: field.get_default(call_default_factory=True)
                        for key, field in cls.Config.model_fields.items()}} for name, cls in registry().items()])
        return EXIT_OK
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
    actions.add_parser("list", help=f"the shipped {what}")
    actions.add_parser("show", help="one by name").add_argument("name")
    actions.add_parser("validate", help="check a YAML file (exit 2 naming the problem)").add_argument(
        "name", metavar="FILE")
    for action in actions.choices.values():
        add_json_option(action)
    parser.set_defaults(handler=handler)


def add_catalogue_commands(sub: argparse._SubParsersAction) -> None:
    _add_list_show_validate(sub, "profiles", cmd_profiles)
    _add_list_show_validate(sub, "recipes", cmd_recipes)
    _add_list_show_validate(sub, "spaces", cmd_spaces)  # `slimline search` spaces

    passes = sub.add_parser("passes", help="list registered compression passes")
    passes.add_argument("action", choices=["list"])
    add_json_option(passes)
    passes.set_defaults(handler=cmd_passes)
