"""Deploy the real Ocean v4 contracts onto the sandbox chain.

Everything comes from the ``ocean-contracts`` PyPI artifacts except the Escrow, which comes from the npm
``@oceanprotocol/contracts`` (:data:`ESCROW_PACKAGE`, installed into the sandbox cache like ganache): that is
the package every released Ocean Node takes its Escrow ABI from, so the sandbox's node personality and a
real node can lock, claim and cancel on it with the same calls. The PyPI 3.1.0 Escrow takes two more
arguments in its claims (``jobType``, ``subsidyProviders``): see ``airflow_provider_ocean.chain.escrow_abi``.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from eth_abi import encode

from airflow_provider_ocean.chain.abi import encode_call
from airflow_provider_ocean.chain.tx import call_function, contract_address_of
from ocean_sandbox import npm

if TYPE_CHECKING:
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender

log = logging.getLogger(__name__)

ZERO = "0x0000000000000000000000000000000000000000"
DEAD = "0x000000000000000000000000000000000000dEaD"
DEPLOY_GAS = 8_000_000
CALL_GAS = 3_000_000
OCEAN_SUPPLY = 1_000_000 * 10**18
#: The Escrow the sandbox deploys: npm ``@oceanprotocol/contracts`` (pinned), at the path the node imports.
ESCROW_PACKAGE = npm.NpmPackage("@oceanprotocol/contracts", "2.6.0")
ESCROW_ARTIFACT = "node_modules/@oceanprotocol/contracts/artifacts/contracts/escrow/Escrow.sol/Escrow.json"


@cache
def artifact(name: str) -> dict[str, Any]:
    """Load one Hardhat artifact (abi + bytecode) shipped by the ``ocean-contracts`` wheel."""
    return _deployable(json.loads((resources.files("artifacts") / f"{name}.json").read_text()), name)


@cache
def escrow_artifact() -> dict[str, Any]:
    """The Escrow artifact of :data:`ESCROW_PACKAGE` (installed with npm on first use)."""
    path = npm.ensure_installed(ESCROW_PACKAGE, ESCROW_ARTIFACT)
    return _deployable(json.loads(path.read_text()), "Escrow")


def _deployable(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data`` if it is the artifact of a deployable contract ``name`` that links no library."""
    if data.get("contractName") != name or not data.get("bytecode", "0x")[2:]:
        raise RuntimeError(f"artifact {name} is not a deployable contract")
    if data.get("linkReferences"):
        raise RuntimeError(f"artifact {name} needs libraries linked: {sorted(data['linkReferences'])}")
    return data


def _canonical(param: dict[str, Any]) -> str:
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_canonical(c) for c in param["components"]) + ")" + kind[5:]
    return kind


def deploy(sender: TransactionSender, name: str, *args: Any) -> str:
    """Deploy PyPI artifact ``name`` with constructor ``args``; return its address."""
    return _deploy(sender, artifact(name), *args)


def deploy_escrow(sender: TransactionSender, router: str) -> str:
    """Deploy the npm Escrow (:data:`ESCROW_PACKAGE`) as barge does: ``Escrow(router, 0x0)``."""
    return _deploy(sender, escrow_artifact(), router, ZERO)


def _deploy(sender: TransactionSender, data: dict[str, Any], *args: Any) -> str:
    name = data["contractName"]
    constructor = next((e for e in data["abi"] if e["type"] == "constructor"), {"inputs": []})
    types = [_canonical(p) for p in constructor["inputs"]]
    if len(types) != len(args):
        raise TypeError(f"{name} constructor takes {len(types)} arguments, got {len(args)}")
    code = bytes.fromhex(data["bytecode"][2:]) + (encode(types, list(args)) if types else b"")
    receipt = sender.transact(None, code, gas=DEPLOY_GAS, what=f"deploy {name}")
    address = contract_address_of(receipt)
    log.info("Deployed %s at %s", name, address)
    return address


def deploy_all(sender: TransactionSender, funded: list[str]) -> dict[str, Any]:
    """Deploy the v4 set needed for C2D (plus the npm Escrow for Ocean Node) in barge's order.

    :param sender: the deployer (owner) account.
    :param funded: accounts that receive 100 000 OCEAN each, as barge does.
    :return: an address map shaped like barge's ``development`` entry.
    """
    escrow_artifact()  # installs the npm package: fail before the first transaction, not half-way
    owner = sender.address
    ocean = deploy(sender, "OceanToken", owner)
    sender.transact(
        ocean, encode_call("mint(address,uint256)", owner, OCEAN_SUPPLY), gas=CALL_GAS, what="mint"
    )
    for address in funded:
        sender.transact(
            ocean,
            encode_call("transfer(address,uint256)", address, 100_000 * 10**18),
            gas=CALL_GAS,
            what="fund OCEAN",
        )
    opc = deploy(sender, "OPFCommunityFeeCollector", owner, owner)
    router = deploy(sender, "FactoryRouter", owner, ocean, DEAD, opc, [])
    start_block = sender.rpc.block_number()
    fre = deploy(sender, "FixedRateExchange", router)
    erc20 = deploy(sender, "ERC20Template")
    erc20_enterprise = deploy(sender, "ERC20TemplateEnterprise")
    erc721 = deploy(sender, "ERC721Template")
    dispenser = deploy(sender, "Dispenser", router)
    factory = deploy(sender, "ERC721Factory", erc721, erc20, router)
    calls = [
        (factory, "addTokenTemplate(address)", erc20_enterprise),
        (router, "addFactory(address)", factory),
        (router, "addFixedRateContract(address)", fre),
        (router, "addDispenserContract(address)", dispenser),
    ]
    for to, signature, arg in calls:
        sender.transact(to, encode_call(signature, arg), gas=CALL_GAS, what=signature)
    escrow = deploy_escrow(sender, router)
    addresses = {
        "chainId": sender.chain_id,
        "Ocean": ocean,
        "OPFCommunityFeeCollector": opc,
        "startBlock": start_block,
        "Router": router,
        "FixedPrice": fre,
        "ERC20Template": {"1": erc20, "2": erc20_enterprise},
        "ERC721Template": {"1": erc721},
        "Dispenser": dispenser,
        "ERC721Factory": factory,
        "Escrow": escrow,
    }
    check_deployment(sender.rpc, addresses)
    return addresses


def check_deployment(rpc: JsonRpcClient, addresses: dict[str, Any]) -> None:
    """Sanity checks after a deployment (as barge's script does); raise if the set is not usable."""
    factory = addresses["ERC721Factory"]
    router = addresses["Router"]
    (templates,) = call_function(rpc, factory, "getCurrentTemplateCount()", (), ["uint256"])
    (router_factory,) = call_function(rpc, router, "factory()", (), ["address"])
    (approved,) = call_function(rpc, router, "isApprovedToken(address)", (addresses["Ocean"],), ["bool"])
    if templates != 2 or router_factory.lower() != factory.lower() or not approved:
        raise RuntimeError(
            f"deployment check failed: templates={templates} router.factory={router_factory} "
            f"approved={approved}"
        )


def is_deployed(rpc: JsonRpcClient, addresses: dict[str, Any]) -> bool:
    """Whether the contracts of ``addresses`` have code on the chain (the chain DB survived)."""
    try:
        return all(rpc.get_code(addresses[k]) for k in ("Ocean", "Router", "ERC721Factory", "Escrow"))
    except Exception:
        return False
