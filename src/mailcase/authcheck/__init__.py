"""Sender authentication: SPF, DKIM, DMARC (and ARC where present), all DNS through
mailcase's one `Resolver` (`mailcase.dns`).

    results = authenticate(raw, client_ip="192.0.2.1", helo="mx.example.com",
                           mail_from="bounce@example.com", resolver=resolver,
                           authserv_id="mx.mailcase.example")
    results.header()             # the Authentication-Results value (RFC 8601)
    is_authenticated(results)    # DMARC pass, or an aligned SPF or DKIM pass

Libraries: pyspf evaluates SPF (its DNS lookups redirected, see `spfcheck`); dkimpy verifies
DKIM and ARC (keys fetched by our resolver, see `dkimcheck`); DMARC is evaluated here (see
`dmarc` for why not authheaders'), with the Public Suffix List authheaders ships. Mail
fetched from a mailbox is judged by `authenticate_fetched` (`trusted`): the verdicts of the
mailbox server the admin trusts, never the SPF of the IMAP connection.
"""

from mailcase.authcheck.check import authenticate, authenticate_async, remove_own_results
from mailcase.authcheck.orgdomain import org_domain
from mailcase.authcheck.results import (
    ARCResult,
    ARCVerdict,
    AuthResults,
    DKIMResult,
    DKIMVerdict,
    DMARCPolicy,
    DMARCResult,
    DMARCVerdict,
    SPFResult,
    SPFVerdict,
    is_authenticated,
)
from mailcase.authcheck.trusted import authenticate_fetched

__all__ = [
    "ARCResult",
    "ARCVerdict",
    "AuthResults",
    "DKIMResult",
    "DKIMVerdict",
    "DMARCPolicy",
    "DMARCResult",
    "DMARCVerdict",
    "SPFResult",
    "SPFVerdict",
    "authenticate",
    "authenticate_async",
    "authenticate_fetched",
    "is_authenticated",
    "org_domain",
    "remove_own_results",
]
