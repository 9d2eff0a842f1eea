"""The demo shop: a gateway, orders, payments, inventory and a worker, each a separate process
under ``tracehouse-agent``, calling each other over HTTP, with SQLite (and Redis when installed),
a flaky external bank, a traffic generator and a schedule of faults."""

__all__ = ["DemoShop"]


def __getattr__(name: str):
    if name == "DemoShop":
        from .launcher import DemoShop

        return DemoShop
    raise AttributeError(name)
