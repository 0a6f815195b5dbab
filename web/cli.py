"""``medroute web``: serve the web UI and API; ``medroute web user add`` / ``token add`` manage accounts.

medroute web                                   # serve on MEDROUTE_HTTP_HOST:MEDROUTE_HTTP_PORT (127.0.0.1:7860)
medroute web user add alice --role reviewer    # asks for the password (or --password-stdin)
medroute web token add nightly --role viewer   # prints a token for scripts, once
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from web.settings import WebSettings
from web.users import AccountsError, Role, add_token, add_user, role_of


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medroute web", description=__doc__.split("\n")[0].replace("``", ""))
    things = parser.add_subparsers(dest="thing", metavar="{user,token}")
    user = things.add_parser("user", help="accounts of the users file (argon2 password hashes)")
    user_actions = user.add_subparsers(dest="action", required=True)
    add = user_actions.add_parser("add", help="add a user or replace their password and role")
    add.add_argument("name")
    add.add_argument("--role", default="viewer", choices=[r.name for r in Role])
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    token = things.add_parser("token", help="API tokens for scripts (Authorization: Bearer TOKEN)")
    token_actions = token.add_subparsers(dest="action", required=True)
    new_token = token_actions.add_parser("add", help="create a token (replacing the name's old one)")
    new_token.add_argument("name")
    new_token.add_argument("--role", default="viewer", choices=[r.name for r in Role])
    return parser


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise AccountsError("the passwords differ")
    return first


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.thing is None:
        from web.server import serve

        return serve()
    settings = WebSettings()
    try:
        if args.thing == "user":
            add_user(settings.users_file, args.name, role_of(args.role), _password(args.password_stdin))
            print(f"{args.name} ({args.role}) written to {settings.users_file}")
        else:
            token = add_token(settings.tokens_file, args.name, role_of(args.role))
            print(token)
            print(f"token for {args.name} ({args.role}) kept (hashed) in {settings.tokens_file}", file=sys.stderr)
    except AccountsError as exc:
        print(f"medroute web: {exc}", file=sys.stderr)
        return 2
    return 0
