"""A small stand-in for an "internal API" inside a protected network, with sample data.

Used by the demo (``scripts/demo``) and the integration tests as the rest plugin's target.
Not part of the product.

    python scripts/demo_api.py --port 9000
"""

from __future__ import annotations

import argparse

from aiohttp import web

DEPARTMENTS = ["Finance", "IT", "HR", "Sales", "Operations"]
USERS = [
    {
        "id": i,
        "user_name": f"user{i:03d}",
        "name": f"User {i:03d}",
        "email": f"user{i:03d}@example.internal",
        "department": DEPARTMENTS[i % len(DEPARTMENTS)],
        "active": i % 7 != 0,
    }
    for i in range(1, 51)
]


async def users(request: web.Request) -> web.Response:
    department = request.query.get("department")
    found = [u for u in USERS if department is None or u["department"] == department]
    return web.json_response({"result": found, "count": len(found)})


async def user(request: web.Request) -> web.Response:
    user_id = int(request.match_info["user_id"])
    for u in USERS:
        if u["id"] == user_id:
            return web.json_response({"result": u})
    return web.json_response({"error": f"no user {user_id}"}, status=404)


async def item(request: web.Request) -> web.Response:
    return web.json_response({"item": int(request.match_info["n"]), "checked_by": request.headers.get("X-Job")})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build() -> web.Application:
    app = web.Application()
    app.router.add_get("/api/users", users)
    app.router.add_get("/api/users/{user_id:\\d+}", user)
    app.router.add_get("/api/items/{n:\\d+}", item)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(build(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
