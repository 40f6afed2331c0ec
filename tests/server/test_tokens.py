"""API tokens: a token can only hand out the scopes it holds itself (admin holds every scope)."""


def create(server, token, scopes):
    return server.request("POST", "/api/v1/tokens", {"name": "t", "scopes": scopes}, token=token)


def test_a_token_cannot_grant_scopes_it_lacks(server):
    minter = server.create_token(["tokens"], name="minter")["token"]
    for scopes in (["admin"], ["audit:read"], ["tokens", "devices:write"]):
        r = create(server, minter, scopes)
        assert r.status == 403, (scopes, r)
        assert "scopes it does not have" in r.json()["error"]["message"]
    assert create(server, minter, ["tokens"]).status == 201
    # The admin token may grant any scope.
    assert create(server, server.token, ["admin", "devices:write"]).status == 201
    # Nothing was created by the refused requests: minter + 2 accepted + the admin token.
    tokens = server.request("GET", "/api/v1/tokens", token=server.token).json()["tokens"]
    assert len(tokens) == 4
