"""A payee backed by the durable ledger, on every suite network: what a site restart keeps."""

from __future__ import annotations

import pytest

from micropay.errors import StaleVoucherError
from micropay.ledger import Ledger
from micropay.payee import Payee
from micropay.payer import Payer

FINNEY = 10**15


def test_payee_keeps_its_vouchers_in_the_ledger_across_a_restart(channels, actors, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    payer = Payer.open(channels, actors.payer, actors.payee.address, 10**18, withdraw_delay=3600)
    with Ledger.open(url, channels.domain) as ledger:
        payee = Payee(channels, actors.payee, book=ledger)
        for _ in range(3):
            accepted = payee.accept(payer.config, payer.pay(FINNEY))
        assert (accepted.increment, accepted.cumulative_amount) == (FINNEY, 3 * FINNEY)

    with Ledger.open(url, channels.domain) as ledger:  # the site restarted
        payee = Payee(channels, actors.payee, book=ledger)
        with pytest.raises(StaleVoucherError):  # a replayed voucher is not paid twice
            payee.accept(payer.config, payer.last_voucher)
        assert payee.accept(payer.config, payer.pay(FINNEY)).increment == FINNEY
        assert ledger.unsettled(payer.config.channel_id) == 4 * FINNEY
        payee.claim_all()
    assert channels.state(payer.config).claimed == 4 * FINNEY
