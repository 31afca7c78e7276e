"""Published test vectors for provider signature schemes, copied verbatim from the providers' own SDK test suites.

Each constant names the file it comes from. They are data, not code: `tests/test_providers.py` checks
`webhooks.signatures.verify` against them, and the provider's library against them too (so a vector that
is copied wrong fails loudly instead of silently testing nothing).
"""
import json

# --- Twilio -------------------------------------------------------------------------------------------
# twilio/twilio-python, tests/unit/test_request_validator.py (ValidationTest.setUp and the port tests)
TWILIO_TOKEN = '12345'
TWILIO_URI = 'https://mycompany.com/myapp.php?foo=1&bar=2'
TWILIO_PARAMS = {'CallSid': 'CA1234567890ABCDE', 'Digits': '1234', 'From': '+14158675309',
                 'To': '+18005551212', 'Caller': '+14158675309'}
TWILIO_SIG = 'RSOYDt4T1cUTdK1PDd93/VVr8B8='            # over TWILIO_URI + sorted params (HMAC-SHA1, base64)
TWILIO_SIG_HTTPS_443 = 'kvajT1Ptam85bY51eRf/AJRuM3w='  # "hash of uri with port 443" (test_validation_adds_port_on_https)
TWILIO_SIG_HTTP_80 = '0ZXoZLH/DfblKGATFgpif+LLRf4='    # "hash of uri with port 80", http:// variant (test_validation_adds_port_on_http)
TWILIO_SIG_HTTP_1234 = 'Zmvh+3yNM1Phv2jhDCwEM3q5ebU='  # "hash of http uri with port 1234" -- validated against the URL *with* :1234 removed
TWILIO_BODY = '{"property": "value", "boolean": true}'
TWILIO_BODY_SHA256 = '0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620'
TWILIO_URI_WITH_BODY = TWILIO_URI + '&bodySHA256=' + TWILIO_BODY_SHA256
TWILIO_BODY_SIG = 'a9nBmqA0ju/hNViExpshrM61xv4='      # over TWILIO_URI_WITH_BODY alone (no params)

# --- Square -------------------------------------------------------------------------------------------
# square/square-python-sdk, tests/integration/test_webhooks_helper.py
SQUARE_BODY = ('{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification",'
               '"event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z",'
               '"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}')
SQUARE_SIG = 'GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4='
SQUARE_KEY = 'Ibxx_5AKakO-3qeNVR61Dw'
SQUARE_URL = 'https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9'
# test_signature_validation_escaped_pass: HTML-ish characters are signed as sent, not unescaped
SQUARE_ESCAPED_BODY = '{"data":{"type":"webhooks","id":">id<"}}'
SQUARE_ESCAPED_SIG = 'Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U='
SQUARE_ESCAPED_KEY = 'signature-key'
SQUARE_ESCAPED_URL = 'https://webhook.site/webhooks'

# --- SendGrid (Twilio SendGrid Event Webhook, ECDSA P-256 / SHA-256) ----------------------------------
# sendgrid/sendgrid-python, test/unit/test_eventwebhook.py
SENDGRID_PUBLIC_KEY = ('MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+'
                       '2fNNRaINXvVpiglSI8eNEc6wEA3F+g==')  # base64 DER SubjectPublicKeyInfo, as the console shows it
SENDGRID_SIG = 'MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM='
SENDGRID_TIMESTAMP = '1600112502'
SENDGRID_PAYLOAD = json.dumps([{
    'email': 'hello@world.com', 'event': 'dropped', 'reason': 'Bounced Address',
    'sg_event_id': 'ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA',
    'sg_message_id': 'LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0',
    'smtp-id': '<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>', 'timestamp': 1600112492,
}], sort_keys=True, separators=(',', ':')) + '\r\n'  # "Be sure to include the trailing carriage return and newline!"
SENDGRID_OTHER_PUBLIC_KEY = ('MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj'
                             '+y7GjUuFDb/R1NGe1OPzpA==')  # test_verify_bad_key

# --- Microsoft Graph ----------------------------------------------------------------------------------
# learn.microsoft.com/graph/change-notifications-delivery-webhooks ("Change notification example"): clientState
# is the value the subscriber chose when creating the subscription; Graph echoes it in every value[] item.
GRAPH_CLIENT_STATE = 'secretClientValue'
GRAPH_NOTIFICATION = {'value': [{
    'id': 'lsgTZMr9KwAAA', 'subscriptionId': '{subscription_guid}',
    'subscriptionExpirationDateTime': '2016-03-19T22:11:09.952Z', 'clientState': 'secretClientValue',
    'changeType': 'created', 'resource': 'users/{user_guid}@{tenant_guid}/messages/{long_id_string}',
    'tenantId': '84bd8158-6d4d-4958-8b9f-9d6445542f95',
    'resourceData': {'@odata.type': '#Microsoft.Graph.Message', '@odata.id': 'Users/{user_guid}@{tenant_guid}/Messages/{long_id_string}',
                     '@odata.etag': 'W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"', 'id': '{long_id_string}'},
}]}
