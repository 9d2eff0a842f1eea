"""Tiny applications the end-to-end tests run in real server processes."""

FASTAPI_APP = '''
import logging
from fastapi import FastAPI, HTTPException
import requests

app = FastAPI()

@app.get("/items/{item_id}")
def item(item_id: int):
    if item_id == 500:
        raise HTTPException(500, "boom")
    logging.getLogger("shop").warning("looked at item %s", item_id)
    return {"id": item_id}

@app.get("/call")
def call(url: str):
    return {"status": requests.get(url, timeout=5).status_code}
'''

WSGI_APP = '''
import os

def app(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [str(os.getpid()).encode()]
'''
