################################################################################
#
# ferrite-agent
#
################################################################################

# Built from the ferrite tree this external lives in (override with
# FERRITE_AGENT_OVERRIDE_SRCDIR in local.mk to point elsewhere).
FERRITE_AGENT_VERSION = local
FERRITE_AGENT_SITE = $(BR2_EXTERNAL_FERRITE_PATH)/../..
FERRITE_AGENT_SITE_METHOD = local
FERRITE_AGENT_LICENSE = Apache-2.0
FERRITE_AGENT_LICENSE_FILES = README.md

# cargo-package infrastructure: vendors the crates, then builds offline
# for the buildroot toolchain's target triple. The workspace root is the
# package: build just the agent.
FERRITE_AGENT_CARGO_BUILD_OPTS = -p ferrite-agent

define FERRITE_AGENT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/release/ferrite-agent \
		$(TARGET_DIR)/init
endef

$(eval $(cargo-package))
