"""user-service: users and their orders over HTTP, on aiohttp and MongoDB."""
