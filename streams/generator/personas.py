"""Who visits the store and what they do in a session.

Five personas with different event mixes: casual browsers (mostly one or two pages,
many bounces), researchers (search, compare, wishlist, come back later), buyers (cart,
checkout, signup), returning customers (logged in, email-driven, buy again, answer CSAT
surveys) and advocates (review, share, refer friends, high NPS). Each session script
writes through a ``SessionWriter``; ``purchase_factor`` scales every decision to pay, which
is how the abandonment-spike scenario makes carts stall at checkout.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from streams.generator.catalog import CURRENCY, SEARCH_TERMS, STATIC_PAGES, Product
from streams.generator.channels import EMAIL, pick_channel, touchpoint
from streams.generator.session import SessionWriter, new_id

CASUAL = "casual_browser"
RESEARCHER = "researcher"
BUYER = "buyer"
RETURNING = "returning_customer"
ADVOCATE = "advocate"


@dataclass(frozen=True, slots=True)
class Persona:
    """A kind of visitor: how common, how many sessions, whether they have an account."""

    name: str
    weight: int
    sessions: tuple[int, int]  # inclusive range of planned sessions
    has_account: bool


PERSONAS: tuple[Persona, ...] = (
    Persona(CASUAL, 45, (1, 2), False),
    Persona(RESEARCHER, 22, (1, 3), False),
    Persona(BUYER, 17, (1, 2), False),
    Persona(RETURNING, 11, (2, 4), True),
    Persona(ADVOCATE, 5, (2, 3), True),
)


@dataclass(frozen=True, slots=True)
class Store:
    """What a session script may look at: the catalog and its category index."""

    products: tuple[Product, ...]
    by_category: dict[str, tuple[Product, ...]]

    @classmethod
    def of(cls, products: tuple[Product, ...]) -> Store:
        """Index ``products`` by category."""
        index: dict[str, list[Product]] = {}
        for product in products:
            index.setdefault(product.category, []).append(product)
        return cls(products, {k: tuple(v) for k, v in index.items()})

    def similar(self, rng: random.Random, product: Product) -> Product:
        """Another product of the same category (what "you may also like" shows)."""
        return rng.choice(self.by_category[product.category])


def _land(w: SessionWriter, store: Store) -> Product | None:
    """The session's first page: its channel decides referrer, UTM and landing page."""
    rng, visitor = w.rng, w.visitor
    channel = pick_channel(rng, visitor.account_id is not None and visitor.logged_in)
    term = rng.choice(SEARCH_TERMS)
    touch = touchpoint(rng, channel, term)
    if channel == EMAIL:
        # The mail is opened a little before the click that brings the visitor in.
        campaign = touch.campaign()
        w.action("email_open", None, None, campaign)
        w.wait(90.0, sigma=1.0)
        w.action("email_click", None, None, campaign)
        w.wait(2.0, sigma=0.3)
    if rng.random() < 0.55:
        product = rng.choice(store.products)
        w.product_view(product, touch)
        return product
    path, title = rng.choice(STATIC_PAGES)
    w.page_view(path, title, touch)
    return None


def _browse(w: SessionWriter, store: Store, focus: Product | None, pages: int) -> Product:
    """View ``pages`` products, mostly near the one in focus; return the last one."""
    rng = w.rng
    product = focus or rng.choice(store.products)
    for _ in range(pages):
        w.read_page(25.0)
        product = store.similar(rng, product) if rng.random() < 0.7 else rng.choice(store.products)
        w.product_view(product)
    return product


def _search(w: SessionWriter) -> None:
    w.read_page(15.0)
    term = w.rng.choice(SEARCH_TERMS)
    w.page_view(f"/search?q={term.replace(' ', '+')}", f"Search: {term}", event_type="search")


def _fill_cart(w: SessionWriter, store: Store, product: Product, lines: int) -> None:
    rng = w.rng
    for line in range(lines):
        if line:
            w.read_page(20.0)
            product = store.similar(rng, product)
            w.product_view(product)
        w.wait(8.0)
        w.add_to_cart(product, 1 if rng.random() < 0.8 else rng.randint(2, 3))
    if len(w.cart) > 1 and rng.random() < 0.15:
        w.wait(20.0)
        w.remove_from_cart(next(iter(w.cart.values()))[0])


def _checkout(w: SessionWriter, purchase_p: float) -> bool:
    """Checkout: maybe sign up or log in, then pay with probability ``purchase_p``."""
    rng, visitor = w.rng, w.visitor
    w.wait(15.0)
    w.action(
        "begin_checkout",
        {"cart_id": w.cart_id, "quantity": w.cart_items(), "currency": CURRENCY},
        "/checkout",
    )
    if not visitor.logged_in:
        w.wait(20.0)
        w.identify("login" if visitor.account_id or rng.random() < 0.35 else "signup")
    if rng.random() >= purchase_p:
        return False  # leaves at checkout: shipping costs, payment trouble, second thoughts
    w.wait(45.0)
    w.action(
        "purchase",
        {
            "order_id": f"ord_{new_id(rng)[:18]}",
            "revenue": w.cart_total_cents() / 100,
            "currency": CURRENCY,
            "cart_id": w.cart_id,
            "quantity": w.cart_items(),
        },
        "/checkout/confirmation",
    )
    w.visitor.purchases += 1
    return True


def _survey(w: SessionWriter, scale: int, score: int) -> None:
    w.wait(30.0)
    w.action("survey_response", {"score": score, "scale": scale}, "/survey")


def _csat_score(rng: random.Random) -> int:
    # Skewed to satisfied, as post-purchase CSAT usually is (about 80% give 4 or 5).
    return rng.choices((1, 2, 3, 4, 5), (4, 5, 11, 35, 45))[0]


def casual_session(w: SessionWriter, store: Store, purchase_factor: float) -> None:
    """One or a few pages, many bounces; a rare add to cart that is never bought."""
    rng = w.rng
    focus = _land(w, store)
    if rng.random() < 0.45:
        w.read_page(20.0)
        return  # bounce
    if rng.random() < 0.1:
        _search(w)
    product = _browse(w, store, focus, rng.randint(1, 3))
    if rng.random() < 0.05:
        w.wait(10.0)
        w.add_to_cart(product, 1)
    w.read_page(20.0)


def researcher_session(w: SessionWriter, store: Store, purchase_factor: float) -> None:
    """Search, many product views, compare and wishlist; seldom buys on the spot."""
    rng = w.rng
    focus = _land(w, store)
    if rng.random() < 0.6:
        _search(w)
    product = _browse(w, store, focus, rng.randint(3, 8))
    if rng.random() < 0.3:
        w.wait(10.0)
        w.action(
            "product_compare", {"product_id": product.product_id, "category": product.category}
        )
    if rng.random() < 0.3:
        w.wait(5.0)
        w.action(
            "add_to_wishlist", {"product_id": product.product_id, "category": product.category}
        )
    # Coming back is when researchers decide: later sessions add to cart more often.
    if rng.random() < (0.35 if w.visitor.sessions_done else 0.12):
        _fill_cart(w, store, product, rng.randint(1, 2))
        if rng.random() < 0.5:
            _checkout(w, 0.6 * purchase_factor)
    w.read_page(20.0)


def buyer_session(w: SessionWriter, store: Store, purchase_factor: float) -> None:
    """A visitor with intent: a few products, a cart, checkout, signup, payment."""
    rng = w.rng
    focus = _land(w, store)
    if rng.random() < 0.3:
        _search(w)
    product = _browse(w, store, focus, rng.randint(1, 4))
    _fill_cart(w, store, product, rng.randint(1, 3))
    if rng.random() < 0.85 and _checkout(w, 0.75 * purchase_factor) and rng.random() < 0.25:
        _survey(w, 5, _csat_score(rng))


def returning_session(w: SessionWriter, store: Store, purchase_factor: float) -> None:
    """A known customer: logs in (or is remembered), browses, buys again, answers surveys."""
    rng = w.rng
    focus = _land(w, store)
    if not w.visitor.logged_in:
        w.wait(10.0)
        w.identify("login")
    product = _browse(w, store, focus, rng.randint(1, 5))
    if rng.random() < 0.5:
        _fill_cart(w, store, product, rng.randint(1, 3))
        if _checkout(w, 0.8 * purchase_factor) and rng.random() < 0.3:
            _survey(w, 5, _csat_score(rng))
    if rng.random() < 0.08:
        _survey(w, 10, rng.choices(range(11), (2, 1, 1, 2, 2, 4, 6, 12, 20, 25, 25))[0])
    w.read_page(20.0)


def advocate_session(w: SessionWriter, store: Store, purchase_factor: float) -> None:
    """A fan: buys, reviews what they bought, shares, refers friends, scores NPS 9-10."""
    rng = w.rng
    focus = _land(w, store)
    if not w.visitor.logged_in:
        w.wait(10.0)
        w.identify("login")
    product = _browse(w, store, focus, rng.randint(1, 3))
    if rng.random() < 0.35:
        _fill_cart(w, store, product, rng.randint(1, 2))
        _checkout(w, 0.85 * purchase_factor)
    if rng.random() < 0.5:
        reviewed = rng.choice(w.visitor.viewed)
        w.wait(60.0)
        w.action(
            "review_submitted",
            {"product_id": reviewed.product_id, "category": reviewed.category, "score": 5},
        )
    if rng.random() < 0.4:
        w.wait(10.0)
        w.action("share", {"product_id": product.product_id, "category": product.category})
    if rng.random() < 0.3:
        w.wait(20.0)
        w.action("referral_sent", None, "/account/referrals")
    if rng.random() < 0.4:
        _survey(w, 10, rng.choices((7, 8, 9, 10), (1, 2, 7, 10))[0])
    w.read_page(20.0)


SessionScript = Callable[[SessionWriter, Store, float], None]

SCRIPTS: dict[str, SessionScript] = {
    CASUAL: casual_session,
    RESEARCHER: researcher_session,
    BUYER: buyer_session,
    RETURNING: returning_session,
    ADVOCATE: advocate_session,
}
