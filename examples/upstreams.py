"""Two small demo services for `make run`: a JSON users service and an orders service."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

USERS = {
    "1": {"id": "1", "name": "Ada Lovelace", "org": "acme"},
    "2": {"id": "2", "name": "Grace Hopper", "org": "navy"},
    "3": {"id": "3", "name": "Alan Turing", "org": "acme"},
}
ORDERS = [
    {"id": "o-1", "user": "1", "item": "analytical engine", "total": 1843},
    {"id": "o-2", "user": "1", "item": "punched cards", "total": 12},
    {"id": "o-3", "user": "2", "item": "compiler", "total": 1952},
]


async def list_users(request: Request) -> JSONResponse:
    return JSONResponse(list(USERS.values()))


async def get_user(request: Request) -> JSONResponse:
    user = USERS.get(request.path_params["id"])
    if user is None:
        return JSONResponse({"error": "no such user"}, status_code=404)
    return JSONResponse(user)


async def update_user(request: Request) -> JSONResponse:
    user_id = request.path_params["id"]
    USERS[user_id] = {**USERS.get(user_id, {}), **(await request.json()), "id": user_id}
    return JSONResponse(USERS[user_id])


async def list_orders(request: Request) -> JSONResponse:
    user = request.query_params.get("user")
    return JSONResponse([order for order in ORDERS if user is None or order["user"] == user])


users = Starlette(
    routes=[
        Route("/users", list_users),
        Route("/users/{id}", get_user),
        Route("/users/{id}", update_user, methods=["PUT"]),
    ]
)
orders = Starlette(routes=[Route("/orders", list_orders)])
