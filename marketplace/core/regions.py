from django.db import models
from django.utils.translation import gettext_lazy as _


class Region(models.TextChoices):
    """Computing hubs of the national 东数西算 layout; sites, providers and placement share this list."""

    JING_JIN_JI = "jing-jin-ji", _("Beijing–Tianjin–Hebei (京津冀)")
    YANGTZE_DELTA = "yangtze-delta", _("Yangtze River Delta (长三角)")
    GREATER_BAY = "greater-bay", _("Guangdong–Hong Kong–Macao (粤港澳)")
    CHENG_YU = "cheng-yu", _("Chengdu–Chongqing (成渝)")
    INNER_MONGOLIA = "inner-mongolia", _("Inner Mongolia (内蒙古)")
    GUIZHOU = "guizhou", _("Guizhou (贵州)")
    GANSU = "gansu", _("Gansu (甘肃)")
    NINGXIA = "ningxia", _("Ningxia (宁夏)")
