#!/usr/bin/python3
"""A TLS smarthost for Baton's system tests, built on aiosmtpd (an SMTP server independent of
Baton; Debian `python3-aiosmtpd`) and Python's ssl module (OpenSSL).

It serves STARTTLS, or implicit TLS (SMTPS, `--implicit`), requires AUTH (PLAIN/LOGIN) before
MAIL, and records to `--out`:
- `auth.log`: one line per AUTH attempt (`<mechanism> <login> ok|fail`), written before the
  answer, so a test can prove credentials were never offered;
- `msg-NNNN.json`: each accepted message (envelope, authenticated login, TLS, content).
It prints `ready` on stdout once listening.
"""
import argparse
import asyncio
import itertools
import json
import os
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--implicit", action="store_true")
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(args.cert, args.key)
numbers = itertools.count(1)


def write_atomically(name, text):
    path = os.path.join(args.out, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def authenticator(server, session, envelope, mechanism, auth_data):
    login = "?"
    ok = False
    if isinstance(auth_data, LoginPassword):
        login = auth_data.login.decode("utf-8", "replace")
        ok = login == args.user and auth_data.password.decode("utf-8", "replace") == args.password
    with open(os.path.join(args.out, "auth.log"), "a", encoding="utf-8") as f:
        f.write(f"{mechanism} {login} {'ok' if ok else 'fail'}\n")
    return AuthResult(success=ok, auth_data=login)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "login": session.auth_data if session.authenticated else "",
            "tls": session.ssl is not None or args.implicit,
            "content": envelope.original_content.decode("utf-8", "replace"),
        }
        write_atomically(f"msg-{next(numbers):04}.json", json.dumps(record))
        return "250 2.0.0 accepted"


def factory():
    return SMTP(
        Handler(),
        hostname="smarthost.test",
        tls_context=None if args.implicit else context,
        require_starttls=False,
        authenticator=authenticator,
        auth_required=True,
        # Over implicit TLS the whole session is encrypted; aiosmtpd only knows STARTTLS.
        auth_require_tls=not args.implicit,
    )


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", args.port, ssl=context if args.implicit else None
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
