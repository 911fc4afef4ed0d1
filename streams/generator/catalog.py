"""The store the traffic shops in: products with categories and prices, devices, locales.

The catalog is built from a fixed seed of its own, so every run of every seed shops in
the same store (a product id always has the same category and price).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: (category, low price, high price in USD): a general-merchandise store.
CATEGORIES: tuple[tuple[str, int, int], ...] = (
    ("shoes", 40, 180),
    ("outerwear", 60, 320),
    ("tops", 15, 70),
    ("bags", 25, 260),
    ("kitchen", 10, 150),
    ("home-decor", 12, 120),
    ("electronics", 20, 900),
    ("beauty", 6, 80),
    ("toys", 8, 90),
    ("outdoor", 20, 400),
)

_ADJECTIVES = ("Classic", "Urban", "Trail", "Everyday", "Premium", "Compact", "Soft", "Pro")
_NOUNS = {
    "shoes": "Sneaker",
    "outerwear": "Jacket",
    "tops": "Tee",
    "bags": "Backpack",
    "kitchen": "Pan",
    "home-decor": "Lamp",
    "electronics": "Headphones",
    "beauty": "Serum",
    "toys": "Puzzle",
    "outdoor": "Tent",
}

SITE = "https://shop.example.com"
CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog item; ``price_cents`` keeps cart arithmetic exact."""

    product_id: str
    category: str
    name: str
    price_cents: int

    @property
    def price(self) -> float:
        """Unit price in currency units, as the tracker sends it."""
        return self.price_cents / 100

    @property
    def path(self) -> str:
        """The product page's path."""
        return f"/p/{self.product_id.lower()}"


def build_catalog(size: int = 240) -> tuple[Product, ...]:
    """The store's products, identical on every call (own fixed seed)."""
    rng = random.Random("journey-streams catalog v1")
    products = []
    for number in range(size):
        category, low, high = CATEGORIES[number % len(CATEGORIES)]
        # Prices end in .99 or .00 and skew low within the category's range, as real
        # assortments do (many cheap items, few expensive ones).
        dollars = int(low + (high - low) * rng.random() ** 2)
        cents = dollars * 100 + rng.choice((99, 0, 49))
        name = f"{rng.choice(_ADJECTIVES)} {_NOUNS[category]} {number}"
        products.append(Product(f"SKU-{10000 + number}", category, name, cents))
    return tuple(products)


#: (device type, user agent, weight): a typical retail mix, more phones than desktops.
DEVICES: tuple[tuple[str, str, int], ...] = (
    (
        "mobile",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        28,
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Mobile Safari/537.36",
        22,
    ),
    (
        "desktop",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        22,
    ),
    (
        "desktop",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Safari/605.1.15",
        10,
    ),
    (
        "desktop",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
        4,
    ),
    (
        "desktop",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
        6,
    ),
    (
        "tablet",
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Mobile/15E148 Safari/604.1",
        8,
    ),
)

LOCALES: tuple[tuple[str, int], ...] = (
    ("en-US", 55),
    ("en-GB", 12),
    ("de-DE", 10),
    ("fr-FR", 8),
    ("es-ES", 6),
    ("nl-NL", 5),
    ("it-IT", 4),
)

SEARCH_TERMS: tuple[str, ...] = (
    "running shoes",
    "rain jacket",
    "wireless headphones",
    "cast iron pan",
    "backpack",
    "gift for her",
    "vitamin c serum",
    "camping tent",
    "desk lamp",
    "puzzle 1000",
)

STATIC_PAGES: tuple[tuple[str, str], ...] = (
    ("/", "Home"),
    ("/new", "New arrivals"),
    ("/sale", "Sale"),
    ("/about", "About us"),
    ("/shipping", "Shipping & returns"),
)
