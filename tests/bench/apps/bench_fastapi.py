"""FastAPI endpoint returning a small pydantic model, for tests/bench/http_bench.py."""

from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]


app = FastAPI()
ITEM = Item(id=1, name="widget", price=9.99, tags=["a", "b"])


@app.get("/")
async def item() -> Item:
    return ITEM
