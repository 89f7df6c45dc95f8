"""The API's routes, one module per resource; ``create_app`` includes their routers in this order."""

from custody.api.routes import balances, customers, ops, withdrawals

ROUTERS = (ops.router, withdrawals.router, customers.router, balances.router)
