"""An example content site behind the micropay paywall: a few paid articles, one free page.

``create_app()`` settles on an embedded chain (eth-tester, in this process) by default;
``create_app(w3=Web3(HTTPProvider(url)), site_key=..., contract=...)`` settles on anvil,
hardhat or a testnet. ``python -m examples.content_site --help`` serves it with uvicorn.
"""

from examples.content_site.site import ARTICLES, ContentSite, create_app, create_site, main

__all__ = ["ARTICLES", "ContentSite", "create_app", "create_site", "main"]
