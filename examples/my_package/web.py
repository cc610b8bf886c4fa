"""The example's ASGI application: `my_package.web:app`."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

app = FastAPI(title="my-package", version="0.1.0")


class Item(BaseModel):
    """An item as clients send it."""

    name: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0)
    tags: list[str] = []


class StoredItem(Item):
    """An item as the application returns it."""

    item_id: int


class ItemQuery(BaseModel):
    """What GET /items/{item_id} answers."""

    item_id: int
    q: str | None = None


_items: dict[int, StoredItem] = {}


@app.get("/")
async def root() -> dict[str, str]:
    """Says hello."""
    return {"message": "hello"}


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


@app.get("/items/{item_id}", response_model=ItemQuery)
async def read_item(item_id: int, q: str | None = None) -> ItemQuery:
    """Echoes a path parameter (validated as an int) and a query parameter."""
    if item_id < 0:
        raise HTTPException(status_code=404, detail="item not found")
    return ItemQuery(item_id=item_id, q=q)


@app.post("/items", response_model=StoredItem, status_code=201)
async def create_item(item: Item) -> StoredItem:
    """Stores an item in memory and returns it with its id."""
    stored = StoredItem(item_id=len(_items) + 1, **item.model_dump())
    _items[stored.item_id] = stored
    return stored
