"""``python -m examples.content_site``: serve the example site with uvicorn."""

import sys

from examples.content_site.site import main

sys.exit(main())
