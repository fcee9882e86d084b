"""Who is calling: the Bearer header, the key's format and checksum, revocation."""

from __future__ import annotations

import httpx
import openai
import pytest

from apikeys.keys import generate_key
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)


def models(gateway, authorization: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": authorization})


def test_a_bad_key_gives_the_sdk_an_authentication_error(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=generate_key(), max_retries=0)

    with pytest.raises(openai.AuthenticationError) as raised:
        client.models.list()

    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert raised.value.body == {
        "message": "Invalid API key",
        "type": "authentication_error",
        "code": "invalid_api_key",
    }


@pytest.mark.parametrize("template", ["Bearer {}", "bearer {}", "BEARER   {}", "Bearer\t{}"])
def test_the_scheme_is_case_insensitive_and_whitespace_is_tolerated(gateway, api_key, template):
    assert models(gateway, template.format(api_key)).status_code == 200


@pytest.mark.parametrize("header", ["  Bearer dos_sk_x  ", "bearer\tdos_sk_x", "BEARER dos_sk_x\n"])
def test_surrounding_whitespace_is_stripped_from_the_header(rf, header):
    # HTTP clients refuse to send leading/trailing whitespace, so this is checked on the parser itself.
    from dosportal.v1.gateway import bearer_token

    assert bearer_token(rf.get("/v1/models", HTTP_AUTHORIZATION=header)) == "dos_sk_x"


def test_a_revoked_key_fails_on_the_very_next_request(gateway, api_key, api_user):
    assert models(gateway, f"Bearer {api_key}").status_code == 200

    api_key_revoke(api_key=ApiKey.objects.get(owner=api_user))
    response = models(gateway, f"Bearer {api_key}")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_fails_on_every_worker_process(gateway_factory, api_key, api_user, transactional_db):
    gateway = gateway_factory(workers=2)
    assert {models(gateway, f"Bearer {api_key}").status_code for _ in range(6)} == {200}

    api_key_revoke(api_key=ApiKey.objects.get(owner=api_user))

    assert {models(gateway, f"Bearer {api_key}").status_code for _ in range(10)} == {401}


def test_a_key_of_a_deactivated_account_is_refused(gateway, api_key, api_user):
    api_user.is_active = False
    api_user.save()

    assert models(gateway, f"Bearer {api_key}").status_code == 401


def test_a_wrong_checksum_is_refused_without_a_database_query(django_assert_num_queries, api_key):
    typo = api_key[:-1] + ("a" if api_key[-1] != "a" else "b")

    with django_assert_num_queries(0):
        assert api_key_authenticate(typo) is None
        assert api_key_authenticate("dos_sk_" + "A" * 32) is None
        assert api_key_authenticate("sk-not-ours") is None


def test_a_valid_key_is_found_with_one_query(django_assert_num_queries, api_user, api_key):
    with django_assert_num_queries(1):
        found = api_key_authenticate(api_key)

    assert found is not None
    assert found.owner.email == api_user.email  # the owner came with the same query


def test_a_well_formed_unknown_key_is_refused(gateway, served_models):
    assert models(gateway, f"Bearer {generate_key()}").status_code == 401


def test_one_users_keys_are_independent(gateway, api_key, api_user):
    _, second = api_key_create(owner=api_user, name="second")
    api_key_revoke(api_key=ApiKey.objects.get(owner=api_user, name="test key"))

    assert models(gateway, f"Bearer {api_key}").status_code == 401
    assert models(gateway, f"Bearer {second}").status_code == 200
