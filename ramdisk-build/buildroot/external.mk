include $(sort $(wildcard $(BR2_EXTERNAL_FERRITE_PATH)/package/*/*.mk))
